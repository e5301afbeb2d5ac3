//! One module per subcommand: its arguments and its `run`.

pub(crate) mod bench;
pub(crate) mod convert;
pub(crate) mod eval;
pub(crate) mod features;
pub(crate) mod info;
pub(crate) mod kernels;
pub(crate) mod segment;
