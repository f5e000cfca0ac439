//! End-to-end tests: the real daemons against the real broker at `AMQP_URL`.

mod agent;
mod archive;
mod audit;
mod collector;
mod config_errors;
mod containers;
mod descriptors;
mod faults;
mod fleet;
mod heal;
mod journal;
mod multiline;
mod ops;
mod overload;
mod partitions;
mod rotation;
mod security;
mod service;
mod state_disk;
mod sustained_rotation;
mod upgrade;
mod upload;
