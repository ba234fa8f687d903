//! The API server itself refuses invalid custom resources with the CEL message that
//! tells a user what to fix. Fixtures live beside the API types:
//! `crates/meridian-api/tests/fixtures/{valid,invalid}-*.yaml`, each invalid one starting
//! with a `# expect: <message substring>` line.

use anyhow::{Context, Result, bail};
use meridian_e2e::*;

fn fixtures() -> Result<Vec<(String, String)>> {
    let dir = workspace_root().join("crates/meridian-api/tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, std::fs::read_to_string(&path)?));
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no fixtures in {}", dir.display());
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn api_server_accepts_valid_and_refuses_invalid_resources_with_cel_messages() -> Result<()> {
    let Some(client) = client_or_skip("crd_validation").await else {
        return Ok(());
    };
    let crds = workspace_root().join("crds");
    kubectl_run(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
    for name in [
        "cacheclusters.cache.meridian.dev",
        "cacheregions.cache.meridian.dev",
    ] {
        kubectl_run(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{name}"),
        ])?;
    }
    let ns = TestNamespace::create(&client, "e2e-cel").await?;
    let dir = std::env::temp_dir().join(format!("meridian-cel-{}", ns.name));
    std::fs::create_dir_all(&dir)?;

    let mut failures = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for (name, text) in fixtures()? {
        let file = dir.join(&name);
        std::fs::write(&file, &text)?;
        let out = kubectl()
            .args(["apply", "--dry-run=server", "-n", &ns.name, "-f"])
            .arg(&file)
            .output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if name.starts_with("valid-") {
            valid += 1;
            if !out.status.success() {
                failures.push(format!("{name}: valid fixture refused: {said}"));
            }
        } else if name.starts_with("invalid-") {
            invalid += 1;
            let expect = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("# expect:"))
                .map(str::trim)
                .with_context(|| format!("{name} has no `# expect:` line"))?;
            if out.status.success() {
                failures.push(format!("{name}: invalid fixture accepted"));
            } else if !said.contains(expect) {
                failures.push(format!("{name}: refused, but without {expect:?}: {said}"));
            }
        }
    }
    assert!(valid > 0 && invalid > 0, "fixtures of both kinds expected");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{valid} valid and {invalid} invalid fixtures behaved as expected");
    Ok(())
}
