//! An agent's workspace as something with a history: where it came from ([`origin`]), how it is
//! layered on the person's directory ([`overlay`]), what the agent changed ([`changes`]), how those
//! changes go back ([`apply`]), and the states it was saved in ([`checkpoint`]).

pub mod apply;
pub mod changes;
pub mod checkpoint;
pub mod gitapply;
mod layer;
pub mod origin;
pub mod overlay;
