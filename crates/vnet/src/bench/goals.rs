//! Issue 2's goals for the API, and the real Neutron's figures on this kind of
//! machine, set against a run's results. Reports them; never fails a run.

use super::list_scale::short;
use super::results::{Results, clients};
use super::stats::ms;

/// Neutron v29 (gunicorn, 2 workers, MariaDB, noauth) on this kind of machine.
pub const NEUTRON_PORT_P50_MS: f64 = 164.0;
const NEUTRON_PORT_P99_MS: f64 = 460.0;
const NEUTRON_PORTS_PER_S: f64 = 1000.0 / 127.0;
const NEUTRON_CPU_PER_1000: f64 = 118.0;
const NEUTRON_LIST_1000_MS: f64 = 830.0;

/// Issue 2's goals.
const GOAL_PORTS_PER_S: f64 = 4000.0;
const GOAL_P99_MS: f64 = 5.0;
const GOAL_CPU_PER_1000: f64 = 0.5;
const GOAL_LIST_1000_MS: f64 = 20.0;
/// "Does not slow as the group grows": last-window p50 within this factor of the first.
const GOAL_RULE_GROWTH: f64 = 1.5;
/// Issue 13: a filtered page at 100,000 ports within this factor of the same at 1,000.
const GOAL_LIST_GROWTH: f64 = 1.2;

/// One line of the goals: what was measured against the goal and Neutron.
pub struct Goal {
    pub what: String,
    pub measured: f64,
    unit: &'static str,
    target: Target,
    pub neutron: Option<f64>,
}

#[derive(Clone, Copy)]
enum Target {
    AtLeast(f64),
    Below(f64),
    AtMost(f64),
}

impl Goal {
    pub fn met(&self) -> bool {
        match self.target {
            Target::AtLeast(t) => self.measured >= t,
            Target::Below(t) => self.measured < t,
            Target::AtMost(t) => self.measured <= t,
        }
    }

    /// How many times better than Neutron (rates: more; costs: less).
    pub fn vs_neutron(&self) -> Option<f64> {
        let n = self.neutron?;
        let x = match self.target {
            Target::AtLeast(_) => self.measured / n,
            Target::Below(_) | Target::AtMost(_) => n / self.measured,
        };
        x.is_finite().then_some(x)
    }

    pub fn target_text(&self) -> String {
        match self.target {
            Target::AtLeast(t) => format!(">= {t}{}", self.unit),
            Target::Below(t) => format!("< {t}{}", self.unit),
            Target::AtMost(t) => format!("<= {t}{}", self.unit),
        }
    }
}

pub fn goals(r: &Results) -> Vec<Goal> {
    let c = clients(r.concurrent.clients);
    let mut goals = vec![
        Goal {
            what: format!("port creates/s, {c}"),
            measured: r.concurrent.per_second(),
            unit: "/s",
            target: Target::AtLeast(GOAL_PORTS_PER_S),
            neutron: Some(NEUTRON_PORTS_PER_S),
        },
        Goal {
            what: "port create p99, 1 client".into(),
            measured: ms(r.single.latencies.p99()),
            unit: " ms",
            target: Target::Below(GOAL_P99_MS),
            neutron: Some(NEUTRON_PORT_P99_MS),
        },
        Goal {
            what: format!("port create p99, {c}"),
            measured: ms(r.concurrent.latencies.p99()),
            unit: " ms",
            target: Target::Below(GOAL_P99_MS),
            neutron: None,
        },
        Goal {
            what: "server CPU-s per 1000 ports, 1 client".into(),
            measured: r.single.cpu_per_1000(),
            unit: " s",
            target: Target::Below(GOAL_CPU_PER_1000),
            neutron: None,
        },
        Goal {
            what: format!("server CPU-s per 1000 ports, {c}"),
            measured: r.concurrent.cpu_per_1000(),
            unit: " s",
            target: Target::Below(GOAL_CPU_PER_1000),
            neutron: Some(NEUTRON_CPU_PER_1000),
        },
    ];
    for list in r.lists.iter().filter(|l| l.items == 1000) {
        goals.push(Goal {
            what: format!("{}, p50", list.label()),
            measured: ms(list.latencies.p50()),
            unit: " ms",
            target: Target::Below(GOAL_LIST_1000_MS),
            neutron: Some(NEUTRON_LIST_1000_MS),
        });
    }
    if let Some(growth) = r.rules.growth() {
        goals.push(Goal {
            what: format!("rule create p50, last {0} / first {0}", r.rules.window),
            measured: growth,
            unit: "x",
            target: Target::Below(GOAL_RULE_GROWTH),
            neutron: None,
        });
    }
    if let Some(s) = &r.scale {
        for list in &s.lists {
            let Some(growth) = list.growth() else {
                continue;
            };
            goals.push(Goal {
                what: format!(
                    "{} p50, {} / {}",
                    list.name,
                    short(s.big_ports),
                    short(s.small_ports)
                ),
                measured: growth,
                unit: "x",
                target: Target::AtMost(GOAL_LIST_GROWTH),
                neutron: None,
            });
        }
    }
    goals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(measured: f64, target: Target, neutron: Option<f64>) -> Goal {
        Goal {
            what: String::new(),
            measured,
            unit: "",
            target,
            neutron,
        }
    }

    #[test]
    fn rates_must_reach_and_costs_stay_below() {
        assert!(goal(4000.0, Target::AtLeast(4000.0), None).met());
        assert!(!goal(3999.0, Target::AtLeast(4000.0), None).met());
        assert!(goal(4.9, Target::Below(5.0), None).met());
        assert!(!goal(5.0, Target::Below(5.0), None).met());
    }

    #[test]
    fn vs_neutron_is_how_many_times_better() {
        let rate = goal(800.0, Target::AtLeast(1.0), Some(8.0));
        assert_eq!(rate.vs_neutron(), Some(100.0));
        let cost = goal(2.0, Target::Below(1.0), Some(118.0));
        assert_eq!(cost.vs_neutron(), Some(59.0));
        assert_eq!(goal(0.0, Target::Below(1.0), Some(1.0)).vs_neutron(), None);
    }
}
