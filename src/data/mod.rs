//! Data: from raw annotations and images to the tensors a training step consumes.
//! `text` turns report strings into cleaned text and token ids exactly as the reference does.

pub mod ids;
pub mod image;
pub mod loader;
pub mod prepare;
pub mod sampler;
pub mod text;
pub mod text_cli;
