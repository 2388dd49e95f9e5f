//! One file per command: its own flags and the function that runs it; the live commands, which share
//! librdkafka clients, under [`live`].

pub(crate) mod generate;
pub(crate) mod live;
pub(crate) mod replay;
