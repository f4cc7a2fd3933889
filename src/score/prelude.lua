-- Runs once in every score VM, before the score: wires `require` to the runtime's
-- module finder and, for shared scores, the Lua half of the sandbox. Internal to the
-- runtime (chunk name `=[orchestra prelude]`), not a module users require.
local find_module, shared, error_message = ...

local loaded = package.loaded
local type, error, select, rawget = type, error, select, rawget
local raw_require = require
local raw_pcall, raw_xpcall = pcall, xpcall

-- Errors raised by the runtime reach Lua code as plain strings (`file:line: message`),
-- like errors raised by Lua itself, so `err:find(...)` works after a `pcall`.
local function caught(ok, ...)
  if ok then
    return true, ...
  end
  return false, error_message((...))
end

function pcall(f, ...)
  return caught(raw_pcall(f, ...))
end

function xpcall(f, handler, ...)
  return raw_xpcall(f, function(e)
    return handler(error_message(e))
  end, ...)
end

-- `require("orchestra.text")` serves the embedded stdlib; `require("lib.util")` loads
-- `lib/util.lua` (or `lib/util/init.lua`) from the score's folder.
function require(name)
  if type(name) ~= "string" then
    error(("`require` needs a module name, got %s"):format(type(name)), 2)
  end
  local module = loaded[name]
  if module ~= nil then
    return module
  end
  local loader, where = find_module(name)
  if loader == nil then
    if not shared and raw_require ~= nil then
      return raw_require(name)
    end
    error(where, 2)
  end
  local result = loader(name, where)
  if result == nil then
    result = loaded[name]
  end
  if result == nil then
    result = true
  end
  loaded[name] = result
  return result
end

if shared then
  local raw_load, raw_setmetatable = load, setmetatable

  -- Text chunks only: binary chunks can break out of the VM.
  function load(chunk, chunkname, mode, ...)
    if mode ~= nil and mode ~= "t" then
      error(
        "`load` accepts text chunks only in shared scores (binary chunks are disabled): pass `--allow-unsafe` to trust this score",
        2
      )
    end
    if select("#", ...) > 0 then
      return raw_load(chunk, chunkname, "t", (...))
    end
    return raw_load(chunk, chunkname, "t")
  end

  -- Finalizers run outside any request's CPU budget: not for shared scores.
  function setmetatable(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
      error(
        "`__gc` finalizers are disabled in shared scores: pass `--allow-unsafe` to trust this score",
        2
      )
    end
    return raw_setmetatable(t, mt)
  end
end
