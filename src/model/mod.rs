//! The R2GenCMN report generator with the ITHN objective, in tch, with numerical parity to the
//! public PyTorch reference (SPEC §2–§4, fixtures in `reference/public/model`).
//!
//! Why it exists: training, evaluation and `generate` all need one model whose parameter names,
//! forward arithmetic, losses and decoding match the reference, so that reference checkpoints
//! load unchanged and the published numbers mean the same thing here.
//!
//! What it guarantees:
//! * parameter and buffer names equal the reference `state_dict()` keys (incl. the tied
//!   `encoder_decoder.model.cmn.*` aliases), [`R2GenCmn::parameters`] lists trainable tensors in
//!   the reference `named_parameters()` order with their optimizer group (0 = visual extractor);
//! * the forward pieces ([`R2GenCmn::visual`], [`R2GenCmn::forward_teacher`], the free
//!   functions of [`ithn`]) are separable so the distributed trainer can gather between them;
//! * every dropout can draw its mask from per-sample seeds ([`layers::Dropout`]), so a sample's
//!   randomness does not depend on which rank or batch it lands in;
//! * greedy (with the reference trigram blocking) and beam search reproduce the reference
//!   sampler, batched, with an incremental key/value cache ([`decode`]).

pub mod att_embed;
pub mod attention;
pub mod cli;
pub mod contract;
pub mod decode;
pub mod feature_cache;
pub mod inference;
pub mod ithn;
pub mod layers;
pub mod memory;
pub mod r2gencmn;
pub mod transformer;
pub mod visual;
pub mod weights;

pub use decode::{beam_search, greedy, Decoded};
pub use ithn::{ithn_forward, IthnBatch, IthnOutputs};
pub use r2gencmn::R2GenCmn;
pub use weights::{ModelCheckpoint, ModelError};
