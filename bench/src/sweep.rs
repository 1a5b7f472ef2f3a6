//! The client-count sweep behind `--plot`: the chosen workloads at each
//! client count, once per system (etcd's sweep, then Keelson's), on one
//! cluster each. It shows how the two scale; the table's medians, not the
//! sweep, are the figures to quote.

use indicatif::MultiProgress;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, System};
use crate::compare::{self, Figures, Plan};
use crate::load::Conns;
use crate::workload::{Settings, Target, Workload};

/// One point of the sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub system: System,
    pub workload: Workload,
    pub clients: usize,
    pub conns: usize,
    pub figures: Figures,
}

/// Operations per point: enough for a stable figure at high concurrency,
/// few enough that one client finishes in about a second.
fn ops_for(clients: usize, total: u64) -> u64 {
    (clients as u64 * 100).clamp(2_000, total.max(2_000))
}

pub async fn run(
    plan: &Plan,
    systems: &[System],
    clients: &[usize],
    workloads: &[Workload],
    mp: &MultiProgress,
) -> anyhow::Result<Vec<SweepPoint>> {
    let mut points = Vec::new();
    for &system in systems {
        compare::say(mp, format!("sweep: {} over {clients:?} clients", system.name()));
        let mut cluster =
            Cluster::start(system, &plan.bins, plan.members, &plan.data_dir, plan.start_timeout).await?;
        let keys = crate::kv::KeySpace::new(plan.settings.load.key_space_size);
        for &c in clients {
            let mut settings: Settings = plan.settings.clone();
            settings.load.clients = c.max(1);
            settings.load.conns = plan.settings.load.conns.min(c.max(1));
            settings.load.total = ops_for(c, plan.settings.load.total);
            let conns = Conns::connect(&cluster.endpoints(), settings.load.conns).await?;
            let mut target = Target::new(&conns, &settings);
            target.keys = keys.clone();
            for &w in workloads {
                let (figures, _) =
                    compare::measure(system.name(), &cluster.pids(), w, &mut target, mp).await?;
                cluster.check_running()?;
                compare::say(
                    mp,
                    format!(
                        "  {:<8} {:<10} {:>4} clients {:>9.0} ops/s  p99 {:>7.2} ms",
                        system.name(),
                        w.label(),
                        c,
                        figures.ops_per_s,
                        figures.p99_ms
                    ),
                );
                points.push(SweepPoint {
                    system,
                    workload: w,
                    clients: c,
                    conns: settings.load.conns,
                    figures,
                });
            }
        }
        cluster.stop();
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_per_point_stay_in_bounds() {
        assert_eq!(ops_for(1, 20_000), 2_000);
        assert_eq!(ops_for(64, 20_000), 6_400);
        assert_eq!(ops_for(1024, 20_000), 20_000);
        assert_eq!(ops_for(1, 500), 2_000);
    }
}
