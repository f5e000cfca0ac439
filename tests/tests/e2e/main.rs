//! End-to-end tests: the real daemons against the real broker at `AMQP_URL`.

mod agent;
mod collector;
mod config_errors;
mod faults;
mod fleet;
mod ops;
mod partitions;
mod rotation;
mod service;
mod state_disk;
