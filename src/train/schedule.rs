//! Per-epoch schedules: StepLR for the learning rates and λ(epoch) for the hard negatives.
//!
//! StepLR follows `torch.optim.lr_scheduler.StepLR` exactly as it behaves in PyTorch 2.x: every
//! `step_size` epochs each group's rate becomes `previous_lr × gamma` in double precision, which
//! is *not* bit-identical to `lr0·gamma^k` (fixture `model/config.json` → `lr_schedule`). The
//! state is just the epoch counter, so a resumed run recomputes the same rates by replaying.

/// StepLR over several parameter groups.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLr {
    step_size: usize,
    gamma: f64,
    /// Scheduler steps taken so far (PyTorch's `last_epoch`).
    last_epoch: usize,
    lrs: Vec<f64>,
}

impl StepLr {
    pub fn new(initial: Vec<f64>, step_size: usize, gamma: f64) -> StepLr {
        StepLr {
            step_size: step_size.max(1),
            gamma,
            last_epoch: 0,
            lrs: initial,
        }
    }

    /// The current rate of every group.
    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }

    /// Scheduler steps taken so far.
    pub fn last_epoch(&self) -> usize {
        self.last_epoch
    }

    /// Ends an epoch: every `step_size`-th call multiplies each rate by gamma.
    pub fn step(&mut self) -> &[f64] {
        self.last_epoch += 1;
        if self.last_epoch.is_multiple_of(self.step_size) {
            for lr in &mut self.lrs {
                *lr *= self.gamma;
            }
        }
        &self.lrs
    }

    /// The schedule after `epochs` steps from `initial` (used on resume).
    pub fn replay(initial: Vec<f64>, step_size: usize, gamma: f64, epochs: usize) -> StepLr {
        let mut s = StepLr::new(initial, step_size, gamma);
        for _ in 0..epochs {
            s.step();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected rates: `lr_schedule` of ../shared/reference/public/model/config.json.
    #[test]
    fn matches_the_reference_lr_schedule_bit_for_bit() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/public/model/config.json");
        let text = std::fs::read_to_string(&path).expect("fixture config.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
        let want: Vec<Vec<f64>> = v["lr_schedule"]
            .as_array()
            .expect("lr_schedule list")
            .iter()
            .map(|e| serde_json::from_value(e["lr"].clone()).expect("lr list"))
            .collect();
        let sched = &v["lr_scheduler"];
        let step = sched["step_size"].as_u64().expect("step_size") as usize;
        let gamma = sched["gamma"].as_f64().expect("gamma");
        let mut s = StepLr::new(want[0].clone(), step, gamma);
        assert_eq!(s.lrs(), want[0].as_slice());
        for w in &want[1..] {
            assert_eq!(s.step(), w.as_slice(), "previous_lr × gamma in double");
        }
    }

    #[test]
    fn steps_only_every_step_size_epochs() {
        let mut s = StepLr::new(vec![1.0], 3, 0.5);
        let seen: Vec<f64> = (0..6).map(|_| s.step()[0]).collect();
        assert_eq!(seen, vec![1.0, 1.0, 0.5, 0.5, 0.5, 0.25]);
        assert_eq!(StepLr::replay(vec![1.0], 3, 0.5, 6), s);
    }
}
