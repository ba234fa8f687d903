//! Pub/sub commands. Confirmations and messages are pushes (`>`) under RESP3.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Ctx;
use crate::client::ClientEvent;
use crate::error::{CmdResult, CommandError};
use crate::protocol::Out;

fn confirm(ctx: &mut Ctx<'_, '_>, kind: &[u8], name: Option<&[u8]>) {
    let count = ctx.client.subscription_count();
    ctx.client
        .handle
        .subscriptions
        .store(ctx.client.channels.len(), Ordering::Relaxed);
    ctx.client
        .handle
        .pattern_subscriptions
        .store(ctx.client.patterns.len(), Ordering::Relaxed);
    ctx.out.push(3);
    ctx.out.bulk(kind);
    match name {
        Some(name) => ctx.out.bulk(name),
        None => ctx.out.null(),
    }
    ctx.out.integer(count as i64);
}

pub fn subscribe(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    for &channel in &ctx.args[1..] {
        ctx.shared.broker.subscribe(channel, &ctx.client.handle);
        ctx.client.channels.insert(channel.to_vec());
        confirm(ctx, b"subscribe", Some(channel));
    }
    Ok(())
}

pub fn psubscribe(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    for &pattern in &ctx.args[1..] {
        ctx.shared.broker.psubscribe(pattern, &ctx.client.handle);
        ctx.client.patterns.insert(pattern.to_vec());
        confirm(ctx, b"psubscribe", Some(pattern));
    }
    Ok(())
}

pub fn unsubscribe(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let channels: Vec<Vec<u8>> = if ctx.args.len() > 1 {
        ctx.args[1..]
            .iter()
            .map(|channel| channel.to_vec())
            .collect()
    } else {
        ctx.client.channels.iter().cloned().collect()
    };
    if channels.is_empty() {
        confirm(ctx, b"unsubscribe", None);
    }
    for channel in channels {
        ctx.shared
            .broker
            .unsubscribe(&channel, ctx.client.handle.id);
        ctx.client.channels.remove(&channel);
        confirm(ctx, b"unsubscribe", Some(&channel));
    }
    Ok(())
}

pub fn punsubscribe(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let patterns: Vec<Vec<u8>> = if ctx.args.len() > 1 {
        ctx.args[1..]
            .iter()
            .map(|pattern| pattern.to_vec())
            .collect()
    } else {
        ctx.client.patterns.iter().cloned().collect()
    };
    if patterns.is_empty() {
        confirm(ctx, b"punsubscribe", None);
    }
    for pattern in patterns {
        ctx.shared
            .broker
            .punsubscribe(&pattern, ctx.client.handle.id);
        ctx.client.patterns.remove(&pattern);
        confirm(ctx, b"punsubscribe", Some(&pattern));
    }
    Ok(())
}

/// Drops all subscriptions without replying (RESET, disconnect).
pub fn unsubscribe_all(ctx: &mut Ctx<'_, '_>) {
    let channels: Vec<Vec<u8>> = std::mem::take(&mut ctx.client.channels)
        .into_iter()
        .collect();
    let patterns: Vec<Vec<u8>> = std::mem::take(&mut ctx.client.patterns)
        .into_iter()
        .collect();
    ctx.shared
        .broker
        .remove_client(ctx.client.handle.id, &channels, &patterns);
    ctx.client.handle.subscriptions.store(0, Ordering::Relaxed);
    ctx.client
        .handle
        .pattern_subscriptions
        .store(0, Ordering::Relaxed);
}

pub fn publish(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let receivers = ctx.shared.broker.publish(ctx.args[1], ctx.args[2]);
    // Like Redis outside cluster mode, the message goes down the replication stream so
    // the replicas' subscribers receive it too (inside EXEC or a script, in its block).
    // A replica applying it does not append it: its link forwards the stream as is.
    let log = &ctx.shared.repl.log;
    if log.is_active() && !ctx.client.primary_link {
        let mut command = Vec::new();
        crate::replication::backlog::encode_command(&mut command, ctx.args);
        super::transactions::propagate(ctx.client, log, &command);
    }
    ctx.shared
        .counters
        .pubsub_messages
        .fetch_add(1, Ordering::Relaxed);
    ctx.out.integer(receivers as i64);
    Ok(())
}

pub fn pubsub(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.args[1].to_ascii_uppercase().as_slice() {
        b"CHANNELS" => {
            let channels: Vec<Bytes> = ctx.shared.broker.channels(ctx.args.get(2).copied());
            ctx.out.array(channels.len());
            for channel in channels {
                ctx.out.bulk(&channel);
            }
        }
        b"NUMSUB" => {
            let channels = &ctx.args[2..];
            ctx.out.map(channels.len());
            for channel in channels {
                ctx.out.bulk(channel);
                ctx.out
                    .integer(ctx.shared.broker.subscriber_count(channel) as i64);
            }
        }
        b"NUMPAT" => ctx.out.integer(ctx.shared.broker.pattern_count() as i64),
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
    }
    Ok(())
}

/// Encodes a delivered message for this connection's protocol.
pub fn encode_event(out: &mut Out, event: &ClientEvent) {
    match event {
        ClientEvent::Message { channel, payload } => {
            out.push(3);
            out.bulk(b"message");
            out.bulk(channel);
            out.bulk(payload);
        }
        ClientEvent::PMessage {
            pattern,
            channel,
            payload,
        } => {
            out.push(4);
            out.bulk(b"pmessage");
            out.bulk(pattern);
            out.bulk(channel);
            out.bulk(payload);
        }
        ClientEvent::Tracking(push) => crate::tracking::encode(out, push),
        ClientEvent::Kill | ClientEvent::Unblock { .. } | ClientEvent::NodeStopping => {}
    }
}
