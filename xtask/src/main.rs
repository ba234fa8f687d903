//! Project automation: `cargo xtask <command>`.

mod bench;
mod chaos;
mod cluster;
mod crds;
mod demo;
mod dockerfile;
mod fuzz;
mod images;
mod manifests;
mod test;
mod test_report;
mod util;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "xtask", about = "Meridian project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Local Kubernetes cluster (control plane and real nodes) built from upstream sources.
    Cluster(cluster::ClusterArgs),
    /// Build the container images the local cluster runs (OCI archives under target/images).
    Images(images::ImagesArgs),
    /// Generate CRD YAML into crds/ (or check for drift with --check).
    Crds(crds::CrdsArgs),
    /// Render charts/meridian into manifests/ (or check for drift with --check).
    Manifests(manifests::ManifestsArgs),
    /// Everything CI runs: lints, generated-file drift, fuzzing, unit, process and e2e tests.
    Test(test::TestArgs),
    /// The fault matrix run `--runs` times on the local cluster, with a recovery table.
    Chaos(chaos::ChaosArgs),
    /// Coverage-guided fuzzing of the node's network decoders (stable toolchain, libFuzzer).
    Fuzz(fuzz::FuzzArgs),
    /// Local control plane with the operator and a two-region cache; prints how to connect.
    Demo,
    /// Benchmarks: `bench node|memory|eviction|cluster|regions|sync|reshard|planners|all` (see docs/benchmarks.md).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Cluster(args) => cluster::run(args),
        Cmd::Images(args) => images::run(args),
        Cmd::Crds(args) => crds::run(args),
        Cmd::Manifests(args) => manifests::run(args),
        Cmd::Test(args) => test::run(args),
        Cmd::Chaos(args) => chaos::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Demo => demo::run(),
        Cmd::Bench { args } => bench::run(&args),
    };
    // The error chain only: a backtrace of xtask itself says nothing about what failed.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
