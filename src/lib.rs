//! Ringway: a thread-per-core edge proxy on io_uring (load balancer, API gateway, reverse proxy).
//! Module layout follows shared/design.md; dependencies point downward only.

pub mod admin;
pub mod alloc;
pub mod cache;
pub mod config;
pub mod deadline;
pub mod gateway;
pub mod hint;
pub mod http;
pub mod l4;
pub mod proxy;
pub mod route;
pub mod server;
pub mod sock;
pub mod telemetry;
pub mod tls;
pub mod upstream;
