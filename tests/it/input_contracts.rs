//! Input contracts (issue 14): the reported cases, every subcommand over bad inputs, and the
//! pairing of checkpoints, configs and prepared data. Drives the real binary in temp dirs.

mod bad_inputs;
mod cases;
mod pairing;
mod util;
