//! Link appearances and disappearances in the current network namespace
//! (the `RTNLGRP_LINK` group), so that the agent reconciles when a port's
//! device is plugged in or goes away: the cached view cannot see that.

use std::collections::HashMap;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;

use super::Error;
use super::netlink::Netlink;
use super::observed::link_name;

/// A link that appeared or went away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    Added(String),
    Removed(String),
}

/// A subscription to link events, opened in the calling thread's namespace.
#[derive(Debug)]
pub struct LinkEvents {
    messages: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    task: tokio::task::JoinHandle<()>,
    /// Index → name of the links that exist, so that a change to an existing
    /// link (there is one notification per change) is not taken for a new one.
    known: HashMap<u32, String>,
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkEvents {
    /// Subscribes, then reads the links that already exist. Must run inside
    /// a tokio runtime.
    pub async fn new() -> Result<Self, Error> {
        let (connection, _, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link]).map_err(Error::Connect)?;
        let task = tokio::spawn(connection);
        let known = Netlink::connect()?
            .link_indexes()
            .await?
            .into_iter()
            .map(|(name, index)| (index, name))
            .collect();
        Ok(LinkEvents {
            messages,
            task,
            known,
        })
    }

    /// The next appearance or disappearance; `None` if the subscription ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        while let Some((msg, _)) = self.messages.next().await {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    let Some(name) = link_name(&l) else { continue };
                    let index = l.header.index;
                    if self.known.insert(index, name.clone()).as_ref() != Some(&name) {
                        return Some(LinkEvent::Added(name));
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    let index = l.header.index;
                    if let Some(name) = self.known.remove(&index).or_else(|| link_name(&l)) {
                        return Some(LinkEvent::Removed(name));
                    }
                }
                _ => {}
            }
        }
        None
    }
}
