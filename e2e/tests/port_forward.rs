//! A cache node is reachable the ways users reach pods: `kubectl port-forward` (the API
//! server streams to the kubelet, which dials localhost inside the pod, so the node must
//! listen there too) and `kubectl logs` (the kubelet reads the container's log).

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use meridian_e2e::*;

/// Kills the port-forward when the test ends, also on failure.
struct Forward(std::process::Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_and_logs_reach_a_cache_node() -> Result<()> {
    let Some((client, ns)) =
        operator_scenario("port_forward_and_logs_reach_a_cache_node", "e2e-forward").await?
    else {
        return Ok(());
    };
    let Deployed { regions, .. } = ClusterFixture::in_region_a("forward", "forward-a", 1, 0)
        .apply(&client, &ns.name)
        .await?;
    let status = wait_region_ready(&regions, "forward-a", Duration::from_secs(300)).await?;
    let pod = status
        .shards
        .first()
        .and_then(|shard| shard.primary.clone())
        .context("shard without primary")?;

    // Port 0: kubectl picks a free local port and prints it.
    let mut child = kubectl()
        .args([
            "-n",
            &ns.name,
            "port-forward",
            &format!("pod/{pod}"),
            ":6379",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start kubectl port-forward")?;
    let stdout = child.stdout.take().context("port-forward stdout")?;
    let forward = Forward(child);
    // kubectl keeps printing ("Handling connection for ..."): its stdout is drained until it
    // exits, since a closed pipe would kill it on its next line.
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = first_tx.send(line);
        }
    });
    let line = tokio::task::spawn_blocking(move || first_rx.recv_timeout(Duration::from_secs(60)))
        .await?
        .context("kubectl port-forward printed nothing within 60 s")?;
    // "Forwarding from 127.0.0.1:43127 -> 6379"
    let local = line
        .split_whitespace()
        .nth(2)
        .filter(|address| address.starts_with("127.0.0.1:"))
        .with_context(|| format!("unexpected port-forward output {line:?}"))?
        .to_string();
    let mut connection = redis_connection(&local).await?;
    let pong: String = redis::cmd("PING").query_async(&mut connection).await?;
    assert_eq!(pong, "PONG");
    let _: () = redis::cmd("SET")
        .arg("forwarded")
        .arg("yes")
        .query_async(&mut connection)
        .await?;
    let got: Option<String> = redis::cmd("GET")
        .arg("forwarded")
        .query_async(&mut connection)
        .await?;
    assert_eq!(got.as_deref(), Some("yes"), "GET through {local}");
    drop(forward);

    let logs = kubectl_run(&["-n", &ns.name, "logs", &pod, "-c", "node"])?;
    if !logs.contains(&pod) {
        bail!("kubectl logs of {pod} does not name the node:\n{logs}");
    }
    Ok(())
}
