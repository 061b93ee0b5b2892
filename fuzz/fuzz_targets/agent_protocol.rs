//! The agent protocol as each side decodes it: a state stream message
//! applied to a host's state (agent), a registration or a port status
//! report (server). The first byte picks which.
#![no_main]

use compiler::protocol::{HostRegistration, HostState, PortStatusReport, StreamMessage};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, line)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let mut state = HostState::default();
            for line in line.split(|b| *b == b'\n') {
                match serde_json::from_slice::<StreamMessage>(line) {
                    Ok(StreamMessage::Snapshot { state: s, .. }) => state = s,
                    Ok(StreamMessage::Delta { changes, .. }) => {
                        for change in changes {
                            state.apply(change);
                        }
                    }
                    Ok(StreamMessage::Idle { .. }) | Err(_) => {}
                }
            }
        }
        1 => drop(serde_json::from_slice::<HostRegistration>(line)),
        _ => drop(serde_json::from_slice::<PortStatusReport>(line)),
    }
});
