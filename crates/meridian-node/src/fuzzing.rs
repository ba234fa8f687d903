//! Entry points for the fuzz targets in `fuzz/` (see docs/testing.md): the decoders
//! that read network input but are private to their modules. Not an API: nothing
//! outside the fuzz crate should call these.

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use clap::Parser;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
use crate::state::Shared;

pub use crate::region::link::LinkReply;

/// Cluster name of the node [`node`] builds (a region link must say it in LINK.HELLO).
pub const CLUSTER: &str = "fuzz";
/// Region of the node [`node`] builds.
pub const REGION: &str = "here";
/// Node id of the node [`node`] builds (a topology map may name it).
pub const NODE_ID: &str = "fuzz-node";

/// A fresh node state: default flags, no listeners, no origin, no password, and
/// nothing taken from `MERIDIAN_*` variables that could point it at the network.
pub fn node() -> Arc<Shared> {
    crate::build_shared(config())
}

/// The flags [`node`] is built from: the defaults, less anything that could point it
/// at the network. Parsing them costs more than building the state: once per process.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut config = Config::try_parse_from([
            "meridian-node",
            "--cluster",
            CLUSTER,
            "--region",
            REGION,
            "--node-id",
            NODE_ID,
            "--shards",
            "4",
        ])
        .expect("fixed flags parse");
        config.origin_url = None;
        config.requirepass = None;
        config.primary_auth = None;
        config.tls_dir = None;
        config.maxmemory = 0;
        config
    })
}

/// The region-link client's reply decoder: takes one reply off the front of `buffer`.
pub fn link_decode_reply(buffer: &mut BytesMut) -> std::io::Result<Option<LinkReply>> {
    crate::region::link::decode_reply(buffer)
}

/// The region-link server: answers the requests read from `stream` until it ends.
pub async fn link_serve<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    stream: S,
) -> std::io::Result<()> {
    // A fixed peer address: the server only logs it.
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 16379));
    crate::region::link::serve_link(shared, stream, peer).await
}

/// The HTTP API: answers the requests read from `io` until it ends.
pub async fn http_serve<I>(shared: Arc<Shared>, io: I) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    crate::http::serve_connection(
        Arc::new(crate::http::Api::new(
            shared,
            8080,
            crate::http::HttpLimits::from_config(config()),
        )),
        io,
    )
    .await
}
