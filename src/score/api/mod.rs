//! The Rust objects scores see, one file per Lua topic. Each area registers itself;
//! [`register`] is the one list that wires them all into a fresh VM.

pub(crate) mod band;
pub(crate) mod model;
pub(crate) mod orchestra;
pub(crate) mod sampling;
pub(crate) mod stage;

/// Installs the Lua API (`orchestra`, `print`) into a VM whose context is set.
pub(crate) fn register(lua: &mlua::Lua) -> mlua::Result<()> {
    orchestra::register(lua)
}
