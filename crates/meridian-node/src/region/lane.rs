//! A lane: the connection from this node to one primary of a peer region.
//!
//! Events are written as soon as they are routed to the lane, without waiting
//! for earlier replies: up to [`WINDOW`] events may be in flight. Replies come
//! back in request order and are matched to the oldest event in flight; each
//! one is reported to the peer at once (that is what a strong write waits
//! for). When the connection breaks, whatever was in flight is sent again,
//! ahead of newer events, after reconnecting; receivers apply events
//! idempotently (by version), so a duplicate is harmless.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::RegionHost;
use super::link::{LinkConn, LinkFeatures, LinkReply, LinkWriter, ReplyReader, encode_event};
use super::outbox::Routed;
use super::{RefusalReason, Regions};

/// Events in flight (sent, reply not yet read) per lane.
const WINDOW: usize = 4096;
/// Events written at once (one `write_all`), and their encoded size bound.
const BATCH_EVENTS: usize = 1024;
const BATCH_BYTES: usize = 1024 * 1024;
/// The oldest event in flight must be acknowledged within this time.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Pause before offering an event the peer answered TRYAGAIN again: a migration batch
/// settles within milliseconds, a slot's move within seconds.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// What a lane tells the peer's coordinator.
#[derive(Debug)]
pub enum LaneReport {
    Up,
    Down(String),
    /// The primary no longer owns an event's slot: the lane stopped and waits
    /// to be replaced once the peer's topology is learnt again.
    Moved,
}

/// A report tagged with the lane it came from.
pub struct LaneMessage {
    pub target: Arc<str>,
    pub generation: u64,
    pub report: LaneReport,
}

/// The coordinator's handle on a lane; dropping it stops the lane.
/// The peer a lane delivers for: named in its logs, told what was acknowledged.
pub trait LaneOwner: Send + Sync {
    /// The peer region's name.
    fn region(&self) -> &str;
    /// The events up to `seq` routed to `target` in lane generation `generation`
    /// were answered (`applied`: accepted, not refused).
    fn delivered(&self, generation: u64, seq: u64, target: &str, applied: bool);
}

pub struct LaneHandle {
    events: mpsc::UnboundedSender<Routed>,
    task: JoinHandle<()>,
    pub up: bool,
}

impl LaneHandle {
    pub fn start(
        peer: Arc<dyn LaneOwner>,
        shared: Arc<dyn RegionHost>,
        target: Arc<str>,
        generation: u64,
        reports: mpsc::UnboundedSender<LaneMessage>,
    ) -> LaneHandle {
        let (events, incoming) = mpsc::unbounded_channel();
        let lane = Lane {
            peer,
            shared,
            target,
            generation,
            reports,
            incoming,
            unsent: VecDeque::new(),
        };
        LaneHandle {
            events,
            task: tokio::spawn(lane.run()),
            up: false,
        }
    }

    pub fn send(&self, routed: Routed) {
        // a lane that stopped (MOVED) is being replaced; its events stay in the outbox
        let _ = self.events.send(routed);
    }
}

impl Drop for LaneHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Lane {
    peer: Arc<dyn LaneOwner>,
    shared: Arc<dyn RegionHost>,
    target: Arc<str>,
    generation: u64,
    reports: mpsc::UnboundedSender<LaneMessage>,
    incoming: mpsc::UnboundedReceiver<Routed>,
    /// Routed to this lane, not written yet (or to be written again), in order.
    unsent: VecDeque<Routed>,
}

/// Why a connection ended.
enum Ended {
    /// The coordinator dropped the lane.
    Closed,
    Moved,
    Failed(String),
    /// The peer refused this node's events over its clock (CLOCKDRIFT): that lasts until
    /// the clocks are fixed, so reconnecting is no sign of health.
    Refused(String),
    /// The peer could not settle an event now (TRYAGAIN: its key's slot is migrating):
    /// the link is healthy, the event is offered again shortly.
    Busy,
}

struct InFlight {
    routed: Routed,
    sent: Instant,
}

/// Events sent and not answered yet, in order, and the permits that keep them within
/// [`WINDOW`].
struct Window {
    in_flight: Mutex<VecDeque<InFlight>>,
    permits: Semaphore,
}

impl Lane {
    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        // After a CLOCKDRIFT refusal the lane is up again only once the peer accepts an
        // event: reconnecting proves nothing, and resetting the backoff on every
        // connection would retry the refused event in a tight loop while the status
        // flapped between up and down.
        let mut refused = false;
        loop {
            let ended = match self.connect().await {
                Ok(conn) => {
                    if !refused {
                        self.report(LaneReport::Up);
                        backoff = MIN_BACKOFF;
                    }
                    self.stream(conn, &mut refused).await
                }
                Err(error) => Ended::Failed(error),
            };
            match ended {
                Ended::Closed => return,
                Ended::Moved => {
                    self.report(LaneReport::Moved);
                    return;
                }
                Ended::Failed(error) | Ended::Refused(error) => {
                    self.report(LaneReport::Down(error));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Ended::Busy => tokio::time::sleep(BUSY_RETRY).await,
            }
        }
    }

    fn report(&self, report: LaneReport) {
        send_report(&self.reports, &self.target, self.generation, report);
    }

    async fn connect(&self) -> Result<LinkConn, String> {
        let settings = &self.shared.regions().settings;
        let password = self.shared.password().unwrap_or_default();
        let tls = self.shared.dialer();
        connect(
            &self.target,
            tls.as_ref(),
            &settings.cluster,
            &settings.region,
            settings.link_user.as_deref(),
            &password,
        )
        .await
    }

    /// Streams events over one connection until it fails; `refused` is set when the peer
    /// refuses this node's clock and cleared (the lane reported up) when it accepts an
    /// event again.
    async fn stream(&mut self, conn: LinkConn, refused: &mut bool) -> Ended {
        let features = conn.features;
        let (mut writer, mut reader) = conn.into_halves();
        let window = Window {
            in_flight: Mutex::new(VecDeque::new()),
            permits: Semaphore::new(WINDOW),
        };
        let (reports, target, generation) = (&self.reports, &self.target, self.generation);
        let mut accepted_again = || {
            if std::mem::take(refused) {
                send_report(reports, target, generation, LaneReport::Up);
            }
        };
        let ended = tokio::select! {
            ended = send_loop(&mut self.incoming, &mut self.unsent, &mut writer, &window, features) => ended,
            ended = receive_loop(&*self.peer, self.shared.regions(), &self.target, self.generation, &mut reader, &window, &mut accepted_again) => ended,
        };
        if matches!(ended, Ended::Refused(_)) {
            *refused = true;
        }
        // whatever the peer did not acknowledge goes out again first, in order
        let mut resend: VecDeque<Routed> = window
            .in_flight
            .into_inner()
            .into_iter()
            .map(|in_flight: InFlight| in_flight.routed)
            .collect();
        resend.append(&mut self.unsent);
        self.unsent = resend;
        ended
    }
}

/// Tells the peer's coordinator how lane `target` of `generation` fares.
fn send_report(
    reports: &mpsc::UnboundedSender<LaneMessage>,
    target: &Arc<str>,
    generation: u64,
    report: LaneReport,
) {
    let _ = reports.send(LaneMessage {
        target: target.clone(),
        generation,
        report,
    });
}

pub async fn connect(
    addr: &str,
    tls: Option<&crate::tls::ClientTls>,
    cluster: &str,
    region: &str,
    user: Option<&str>,
    password: &str,
) -> Result<LinkConn, String> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        LinkConn::connect(addr, tls, cluster, region, user, password),
    )
    .await
    .map_err(|_| format!("{addr}: connect timed out"))?
    .map_err(|error| format!("{addr}: {error}"))
}

/// Writes events as they arrive, as long as the window has room.
async fn send_loop(
    incoming: &mut mpsc::UnboundedReceiver<Routed>,
    unsent: &mut VecDeque<Routed>,
    writer: &mut LinkWriter,
    window: &Window,
    features: LinkFeatures,
) -> Ended {
    let mut request = Vec::new();
    loop {
        if unsent.is_empty() {
            // cancel-safe: an event is either still in the channel or in `unsent`
            match incoming.recv().await {
                Some(routed) => unsent.push_back(routed),
                None => return Ended::Closed,
            }
        }
        while let Ok(routed) = incoming.try_recv() {
            unsent.push_back(routed);
        }
        match window.permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => return Ended::Closed,
        }
        // one permit per event: the first was waited for, the rest must be free now
        request.clear();
        {
            let mut in_flight = window.in_flight.lock();
            let sent = Instant::now();
            let mut batched = 0;
            while let Some(routed) = unsent.pop_front() {
                encode_event(&mut request, &routed.event, features);
                in_flight.push_back(InFlight { routed, sent });
                batched += 1;
                if unsent.is_empty() || batched == BATCH_EVENTS || request.len() >= BATCH_BYTES {
                    break;
                }
                match window.permits.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
            }
        }
        if let Err(error) = writer.send(&request).await {
            return Ended::Failed(format!("write failed: {error}"));
        }
    }
}

/// Reads replies in order and acknowledges the matching events to the peer.
async fn receive_loop(
    peer: &dyn LaneOwner,
    regions: &Regions,
    target: &Arc<str>,
    generation: u64,
    reader: &mut ReplyReader,
    window: &Window,
    accepted: &mut impl FnMut(),
) -> Ended {
    loop {
        // the deadline follows the oldest event in flight; when idle it is
        // re-evaluated every ACK_TIMEOUT
        let oldest = window
            .in_flight
            .lock()
            .front()
            .map(|in_flight| in_flight.sent);
        let deadline = oldest.unwrap_or_else(Instant::now) + ACK_TIMEOUT;
        let reply = match tokio::time::timeout_at(deadline, reader.next()).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                if error.kind() == std::io::ErrorKind::InvalidData {
                    let error = format!("{target}: {error}");
                    tracing::warn!(peer = %peer.region(), %target, %error, "region link dropped: bad reply");
                    regions.record_refusal(Some(peer.region()), RefusalReason::BadReply, &error);
                    return Ended::Failed(error);
                }
                return Ended::Failed(format!("{target}: {error}"));
            }
            Err(_) if oldest.is_some() => {
                return Ended::Failed(format!(
                    "{target}: no acknowledgement within {}s",
                    ACK_TIMEOUT.as_secs()
                ));
            }
            Err(_) => continue,
        };
        let mut queue = window.in_flight.lock();
        let Some(answered) = queue.pop_front() else {
            return Ended::Failed(format!("{target}: reply without a request"));
        };
        let applied = match reply {
            LinkReply::Error(error) if error.starts_with("MOVED") => {
                // not applied there: stays in flight, so it is routed again
                queue.push_front(answered);
                return Ended::Moved;
            }
            LinkReply::Error(error) if error.starts_with("TRYAGAIN") => {
                // not applied: the key's slot is migrating there. The event stays
                // first in flight and goes out again, in order, on a new connection
                queue.push_front(answered);
                return Ended::Busy;
            }
            LinkReply::Error(error) if error.starts_with("CLOCKDRIFT") => {
                // the peer dropped the link over this node's clock: the event
                // stays in flight and is offered again after the backoff, so
                // nothing is lost while the clocks are fixed (MERIDIAN.PEERS
                // GET shows the error as the link's last_error)
                queue.push_front(answered);
                return Ended::Refused(format!("{target}: {error}"));
            }
            LinkReply::Ok => {
                accepted();
                true
            }
            LinkReply::Error(error) => {
                tracing::warn!(peer = %peer.region(), %target, %error, "peer refused an event");
                false
            }
            LinkReply::Bulk(_) => {
                tracing::warn!(peer = %peer.region(), %target, "unexpected bulk reply to an event");
                false
            }
        };
        drop(queue);
        window.permits.add_permits(1);
        peer.delivered(generation, answered.routed.seq, target, applied);
    }
}
