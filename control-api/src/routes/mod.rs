//! The `/api/v1` routes.

pub mod accounts;
pub mod control;
pub mod devices;
pub mod feeds;
pub mod files;
pub mod history;
pub mod jobs;
pub mod library;
pub mod members;
pub mod oidc;
pub mod podcasts;
pub mod recordings;
pub mod retention;
pub mod rooms;
