//! Input contracts (issue 14): the reported cases, every subcommand over bad inputs, and the
//! pairing of checkpoints, configs and prepared data. Drives the real binary in temp dirs.

#[path = "input_contracts/bad_inputs.rs"]
mod bad_inputs;
#[path = "input_contracts/cases.rs"]
mod cases;
#[path = "input_contracts/pairing.rs"]
mod pairing;
#[path = "input_contracts/util.rs"]
mod util;
