//! The registry mirror of dfdaemon: against an in-process fake registry (api, auth,
//! faults) and against real clients from Debian packages (clients, private).

mod api;
mod auth;
mod clients;
mod docker;
mod faults;
mod preheat;
mod private;
mod proxy;
mod util;
