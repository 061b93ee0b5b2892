//! The nftables backend: enforces port security and security groups of a
//! host's local ports. From a [`HostState`] [`desired`] builds the ruleset
//! (pure), [`plan`] diffs it against what vnet's two tables hold (pure) into
//! ONE transaction, and [`NftReconciler::reconcile`] observes, plans and
//! runs it as one nf_tables netlink batch sent in-process ([`netlink`];
//! every rule a typed [`rule::Rule`] with nft's expressions): set elements,
//! the elements of the base chains' named dispatch and zone maps (so a port
//! added or removed never rewrites a base chain), chains, rules, sets. Only
//! a transaction with a step not encoded yet goes as one `nft -f -`
//! process: tables, base chains and their maps created (a first start, or
//! the first after an upgrade), or a rule nft would write otherwise than
//! vnet encodes it (a list of prefixes reaching the top of the address
//! space: an open interval).
//! Nothing is flushed
//! wholesale: a chain is rewritten only when its rules changed (atomically, within the
//! transaction), a remote group's member set changes element by element, and
//! conntrack is never flushed, so connections the new rules still allow
//! carry on. Only the tables `bridge vnet` and `inet vnet` are touched, plus
//! the `nf_call_iptables`/`nf_call_ip6tables` switches of vnet's own bridges
//! (`vnbr*`) that carry a secured port. See [`ruleset`] for the design.
//!
//! The bridges' switches are read and set over rtnetlink in-process
//! ([`bridges`]). Its netlink sockets, and the `nft` child processes, are in
//! the network namespace of the calling thread. Blocking: from async code
//! call it on `spawn_blocking` (the agent's host namespace is the
//! process's own).
//!
//! # Use from the daemon
//!
//! One [`NftReconciler`] per agent, for every desired state, in this order:
//! 1. `nft.reconcile_hinted(&state, &hints)` — the rules for new ports
//!    exist before their devices are attached (they name devices by
//!    string, not index); `hints` ([`Hints`]) name what the stream's
//!    deltas changed since the last call (everything after a snapshot);
//! 2. the `linux` reconciler (creates bridges with netfilter already on, so
//!    nothing passes unfiltered);
//! 3. when step 2 created or deleted a bridge, `nft.bridges_changed(…)` and
//!    `nft.reconcile_hinted(&state, &Hints::default())` again (it only sets
//!    the bridges' netfilter switches then).
//!
//! The first call after start (the view is empty) reads the tables, so a
//! restart with an unchanged state applies nothing. A cached call rebuilds
//! only the pieces of the ruleset whose inputs changed, looking only at
//! those the hints name, and plans only those ([`incremental`];
//! `reconcile_cached` looks at every piece). On an error the view is
//! forgotten and the next call reads the kernel again; call `reconcile`
//! (always reads) periodically to repair changes made behind vnet's back.
//! The `nftables` package (nft ≥ 1.0.6) must be installed.

mod bridges;
pub mod hints;
pub mod incremental;
pub mod netlink;
mod plan;
pub mod rule;
pub mod ruleset;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use compiler::protocol::HostState;

pub use hints::Hints;
pub use incremental::{IncrementalRuleset, Touched};
pub use plan::{
    ObservedNft, ObservedTable, Op, Transaction, parse_table, plan, plan_touched, rule_tag,
};
pub use ruleset::{Family, NftConfig, Ruleset, TABLE, desired};

/// What stopped a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {program}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("nf_tables batch: {0}")]
    Netlink(#[from] netlink::BatchError),
    #[error("bridge netfilter switches: {0}")]
    Bridge(#[from] bridges::BridgeError),
    #[error("cannot read the output of `{command}`")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What one reconcile did.
#[derive(Debug, Default)]
pub struct NftReport {
    /// The transaction run (empty: nftables already matched).
    pub transaction: Transaction,
    /// Bridges whose netfilter switches were turned on or off.
    pub bridges_switched: Vec<String>,
    pub observe: Duration,
    pub execute: Duration,
}

impl NftReport {
    pub fn unchanged(&self) -> bool {
        self.transaction.is_empty() && self.bridges_switched.is_empty()
    }
}

/// Reconciles nftables in the network namespace of the calling thread.
///
/// [`NftReconciler::reconcile`] reads the kernel every time, so a fresh
/// reconciler (an agent restart) with an unchanged desired state applies
/// nothing. [`NftReconciler::reconcile_cached`] plans against what the last
/// successful reconcile left (vnet's tables are vnet's alone), which saves
/// the listing: with a 10,000-member set that listing costs far more than
/// the one-element transaction.
#[derive(Debug)]
pub struct NftReconciler {
    config: NftConfig,
    /// Transactions go as one netlink batch and the bridges' switches
    /// over rtnetlink (no process); off only to measure the process path
    /// against it ([`BY_PROCESS_ENV`]).
    in_process: bool,
    /// A cached reconcile rebuilds and diffs the whole ruleset (against the
    /// cached view), as before the incremental path; only to measure that
    /// path against it ([`WHOLE_PLANS_ENV`]).
    whole_plans: bool,
    /// What the last reconcile left; `None` after a failure.
    kept: Mutex<Option<Kept>>,
}

/// What a cached reconcile plans from.
#[derive(Debug)]
struct Kept {
    /// The tables as the last reconcile left them.
    view: ObservedNft,
    /// The bridges' netfilter switches, likewise.
    switches: BTreeMap<String, bool>,
    /// The desired ruleset of the last state, with its pieces' inputs.
    desired: IncrementalRuleset,
}

/// Set (to anything) in an agent's environment, every change is run by
/// `nft -f` and the bridges' switches by `ip`, as before the in-process
/// path: the baseline of `vnet bench`.
pub const BY_PROCESS_ENV: &str = "VNET_NFT_BY_PROCESS";

/// Set (to anything) in an agent's environment, every delta rebuilds and
/// diffs the whole desired state (nftables and links) against the views
/// the last reconcile left, as before the incremental path: the baseline
/// of `vnet bench convergence`.
pub const WHOLE_PLANS_ENV: &str = "VNET_AGENT_WHOLE_PLANS";

impl Default for NftReconciler {
    fn default() -> Self {
        NftReconciler::new(NftConfig::default())
    }
}

impl NftReconciler {
    pub fn new(config: NftConfig) -> Self {
        NftReconciler {
            config,
            in_process: std::env::var_os(BY_PROCESS_ENV).is_none(),
            whole_plans: std::env::var_os(WHOLE_PLANS_ENV).is_some(),
            kept: Mutex::new(None),
        }
    }

    /// Runs every transaction by `nft -f` (the path before the in-process
    /// one), or not.
    pub fn by_process(mut self, yes: bool) -> Self {
        self.in_process = !yes;
        self
    }

    fn kept_slot(&self) -> MutexGuard<'_, Option<Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Tells the cached view of bridges the link reconciler made (born
    /// filtered) or deleted since: the next cached reconcile turns off the
    /// switches of a new one no secured port needs, as a full one would.
    pub fn bridges_changed(&self, made: &[String], deleted: &[String]) {
        if let Some(kept) = self.kept_slot().as_mut() {
            // A bridge remade (deleted, then made) is born again.
            for bridge in deleted {
                kept.switches.remove(bridge);
            }
            for bridge in made {
                kept.switches.insert(bridge.clone(), true);
            }
        }
    }

    /// Forgets the cached view: the next `reconcile_cached` observes.
    pub fn invalidate(&self) {
        *self.kept_slot() = None;
    }

    /// Like [`NftReconciler::reconcile`], but plans against the cached view
    /// when there is one (a bridge it has not seen was made by the `linux`
    /// reconciler, born filtered), and only what changed since the last
    /// state: the pieces of the ruleset whose inputs changed are rebuilt,
    /// and only they are diffed.
    pub fn reconcile_cached(&self, state: &HostState) -> Result<NftReport, NftError> {
        self.reconcile_hinted(state, &Hints::everything())
    }

    /// Like [`NftReconciler::reconcile_cached`], knowing from the stream
    /// what changed since the last call's state: only the pieces `hints`
    /// name are looked at (they must name every change).
    pub fn reconcile_hinted(
        &self,
        state: &HostState,
        hints: &Hints,
    ) -> Result<NftReport, NftError> {
        let kept = self.kept_slot().take();
        match kept {
            Some(kept) => self.converge_touched(state, hints, kept),
            None => self.converge(state),
        }
    }

    /// Reads vnet's two tables (two `nft -j list table` processes).
    pub fn observe(&self) -> Result<ObservedNft, NftError> {
        Ok(ObservedNft {
            bridge: observe_table(Family::Bridge)?,
            inet: observe_table(Family::Inet)?,
        })
    }

    /// Observes, plans, and runs the transaction if there is one; then makes
    /// the bridges' netfilter switches match (run it after the `linux`
    /// reconciler, which creates the bridges).
    pub fn reconcile(&self, state: &HostState) -> Result<NftReport, NftError> {
        self.invalidate();
        self.converge(state)
    }

    /// The full path: the whole desired ruleset against the kernel's.
    fn converge(&self, state: &HostState) -> Result<NftReport, NftError> {
        let start = Instant::now();
        let desired = IncrementalRuleset::new(state, &self.config);
        let bridges = if self.in_process {
            bridges::observe(crate::linux::BRIDGE_PREFIX)?
        } else {
            observe_bridges()?
        };
        let have = self.observe()?;
        let observed_at = Instant::now();
        let transaction = plan(desired.ruleset(), &have);
        self.run(&transaction)?;
        let kept = Kept {
            view: ObservedNft::from_ruleset(desired.ruleset()),
            switches: bridges.into_iter().collect(),
            desired,
        };
        self.finish(transaction, kept, start, observed_at)
    }

    /// The cached path: no process reads anything, and only what changed
    /// is rebuilt and diffed.
    fn converge_touched(
        &self,
        state: &HostState,
        hints: &Hints,
        mut kept: Kept,
    ) -> Result<NftReport, NftError> {
        let start = Instant::now();
        let touched = if self.whole_plans {
            kept.desired = IncrementalRuleset::new(state, &self.config);
            None
        } else {
            Some(kept.desired.update_hinted(state, &self.config, hints))
        };
        let want = kept.desired.ruleset();
        // A bridge the view has not seen was just made by the link
        // reconciler, which makes bridges filtered.
        for bridge in &want.filtered_bridges {
            kept.switches.entry(bridge.clone()).or_insert(true);
        }
        let transaction = match &touched {
            Some(touched) => plan_touched(want, &kept.view, touched),
            None => plan(want, &kept.view),
        };
        self.run(&transaction)?;
        match &touched {
            Some(touched) => kept.view.apply_touched(want, touched, &transaction),
            None => kept.view = ObservedNft::from_ruleset(want),
        }
        self.finish(transaction, kept, start, start)
    }

    /// Sets the bridges' switches and keeps what this reconcile left.
    fn finish(
        &self,
        transaction: Transaction,
        mut kept: Kept,
        start: Instant,
        observed_at: Instant,
    ) -> Result<NftReport, NftError> {
        let want = kept.desired.ruleset();
        let listed: Vec<(String, bool)> = kept
            .switches
            .iter()
            .map(|(b, on)| (b.clone(), *on))
            .collect();
        let bridges_switched = if self.in_process {
            let flips = bridge_switches(want, &listed);
            bridges::switch(&flips)?;
            flips.into_iter().map(|(n, _)| n).collect()
        } else {
            switch_bridges(want, &listed)?
        };
        for bridge in &bridges_switched {
            let on = want.filtered_bridges.contains(bridge);
            kept.switches.insert(bridge.clone(), on);
        }
        *self.kept_slot() = Some(kept);
        Ok(NftReport {
            transaction,
            bridges_switched,
            observe: observed_at - start,
            execute: observed_at.elapsed(),
        })
    }

    /// Runs one transaction as planned elsewhere.
    /// (It forgets the cached view.)
    pub fn apply(&self, transaction: &Transaction) -> Result<(), NftError> {
        self.invalidate();
        self.run(transaction)
    }

    /// A transaction as one netlink batch when every step of it has an
    /// encoding; any other by `nft -f` (one process); each one transaction.
    fn run(&self, transaction: &Transaction) -> Result<(), NftError> {
        if transaction.is_empty() {
            return Ok(());
        }
        if self.in_process
            && let Ok(messages) = netlink::transaction_messages(transaction)
        {
            return Ok(netlink::send_batch(&messages)?);
        }
        run_script(&transaction.script)
    }

    /// Deletes vnet's tables (for uninstalling; never done by reconcile).
    pub fn remove_all(&self) -> Result<(), NftError> {
        self.invalidate();
        let have = self.observe()?;
        let mut script = String::new();
        for f in [Family::Bridge, Family::Inet] {
            if have.table(f).exists {
                script += &format!("delete table {} {TABLE}\n", f.as_str());
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        run_script(&script)
    }
}

fn output(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<std::process::Output, NftError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NftError::Spawn { program, source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|source| NftError::Spawn { program, source })?;
    }
    child
        .wait_with_output()
        .map_err(|source| NftError::Spawn { program, source })
}

fn observe_table(family: Family) -> Result<ObservedTable, NftError> {
    let args = ["-j", "list", "table", family.as_str(), TABLE];
    let out = output("nft", &args, None)?;
    let command = format!("nft {}", args.join(" "));
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("No such file or directory") {
            return Ok(ObservedTable::default());
        }
        return Err(NftError::Failed { command, stderr });
    }
    parse_table(&String::from_utf8_lossy(&out.stdout))
        .map_err(|source| NftError::Parse { command, source })
}

fn run_script(script: &str) -> Result<(), NftError> {
    let out = output("nft", &["-f", "-"], Some(script))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Failed {
            command: format!("nft -f - <<EOF\n{script}EOF"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// vnet's bridges and whether IP traffic through them goes to netfilter
/// (by `ip`: the path before the in-process one).
fn observe_bridges() -> Result<Vec<(String, bool)>, NftError> {
    let args = ["-d", "-j", "link", "show", "type", "bridge"];
    let out = output("ip", &args, None)?;
    let command = format!("ip {}", args.join(" "));
    if !out.status.success() {
        return Err(NftError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|source| NftError::Parse { command, source })?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let name = l["ifname"].as_str()?;
            name.starts_with(crate::linux::BRIDGE_PREFIX)
                .then_some(())?;
            let data = &l["linkinfo"]["info_data"];
            let on = data["nf_call_iptables"].as_u64() == Some(1)
                && data["nf_call_ip6tables"].as_u64() == Some(1);
            Some((name.to_string(), on))
        })
        .collect())
}

/// The switches to flip: on for bridges with a secured port, off for vnet's
/// other bridges (so their traffic skips conntrack).
pub fn bridge_switches(want: &Ruleset, have: &[(String, bool)]) -> Vec<(String, bool)> {
    have.iter()
        .filter_map(|(name, on)| {
            let should = want.filtered_bridges.contains(name);
            (should != *on).then(|| (name.clone(), should))
        })
        .collect()
}

fn switch_bridges(want: &Ruleset, have: &[(String, bool)]) -> Result<Vec<String>, NftError> {
    let flips = bridge_switches(want, have);
    if flips.is_empty() {
        return Ok(vec![]);
    }
    let mut batch = String::new();
    for (name, on) in &flips {
        let v = u8::from(*on);
        batch +=
            &format!("link set {name} type bridge nf_call_iptables {v} nf_call_ip6tables {v}\n");
    }
    let out = output("ip", &["-batch", "-"], Some(&batch))?;
    if !out.status.success() {
        return Err(NftError::Failed {
            command: format!("ip -batch - <<EOF\n{batch}EOF"),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(flips.into_iter().map(|(n, _)| n).collect())
}

#[cfg(test)]
mod tests;
