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
    // Convention (crates/meridian-api/tests/fixtures/README.md): documents are applied in
    // order, so a later one can update an earlier one; in an invalid fixture every document
    // but the last is accepted, and the last is refused with the `# expect:` text.
    let apply = |file: &std::path::Path, dry_run: bool| -> Result<(bool, String)> {
        let mut cmd = kubectl();
        cmd.args(["apply", "-n", &ns.name]);
        if dry_run {
            cmd.arg("--dry-run=server");
        }
        let out = cmd.arg("-f").arg(file).output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    for (name, text) in fixtures()? {
        let docs: Vec<&str> = text
            .split("\n---")
            .filter(|d| d.lines().any(|l| l.starts_with("kind:")))
            .collect();
        let Some((last, earlier)) = docs.split_last() else {
            failures.push(format!("{name}: no documents"));
            continue;
        };
        let mut setup_ok = true;
        for (i, doc) in earlier.iter().enumerate() {
            let file = dir.join(format!("{name}.{i}.yaml"));
            std::fs::write(&file, doc)?;
            let (ok, said) = apply(&file, false)?;
            if !ok {
                failures.push(format!("{name}: document {i} refused: {said}"));
                setup_ok = false;
            }
        }
        if !setup_ok {
            continue;
        }
        let file = dir.join(format!("{name}.last.yaml"));
        std::fs::write(&file, last)?;
        if name.starts_with("valid-") {
            valid += 1;
            let (ok, said) = apply(&file, false)?;
            if !ok {
                failures.push(format!("{name}: valid fixture refused: {said}"));
            }
        } else if name.starts_with("invalid-") {
            invalid += 1;
            let expect = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("# expect:"))
                .map(str::trim)
                .with_context(|| format!("{name} has no `# expect:` line"))?;
            let (ok, said) = apply(&file, true)?;
            if ok {
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
