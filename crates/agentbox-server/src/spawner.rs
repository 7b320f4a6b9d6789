//! Spawning from the server: the request is checked here, so bad input never costs a process,
//! then built by a fresh single-threaded `agentbox __spawn` process (see
//! [`agentbox_engine::spawn::spawn_in_child`]): a sandbox cannot be cloned from a process with
//! threads.

use agentbox_engine::views::AgentView;
use agentbox_engine::Home;

use super::extract::{blocking, ApiResult};
use crate::spawn_request::SpawnRequest;

pub async fn spawn(home: &Home, req: &SpawnRequest) -> ApiResult<AgentView> {
    let spec = req.to_spec()?;
    let home = home.clone();
    blocking(move || agentbox_engine::spawn::spawn_in_child(&home, &spec)).await
}
