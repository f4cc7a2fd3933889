--- List helpers for scores (plain Lua sequences, models included).
---
--- ```lua
--- local list = require("orchestra.list")
--- local names = list.map(band:members(), function(m) return m.name end)
--- ```
---@class orchestra.list
local list = {}

--- A new list of `f(x)` for every `x`.
---@generic T, U
---@param xs T[]
---@param f fun(x: T, i: integer): U
---@return U[]
function list.map(xs, f)
  local out = {}
  for i, x in ipairs(xs) do
    out[i] = f(x, i)
  end
  return out
end

--- The items for which `keep(x)` is true.
---@generic T
---@param xs T[]
---@param keep fun(x: T): boolean
---@return T[]
function list.filter(xs, keep)
  local out = {}
  for _, x in ipairs(xs) do
    if keep(x) then
      out[#out + 1] = x
    end
  end
  return out
end

--- The first item for which `match(x)` is true, and its index.
---@generic T
---@param xs T[]
---@param match fun(x: T): boolean
---@return T|nil, integer|nil
function list.find(xs, match)
  for i, x in ipairs(xs) do
    if match(x) then
      return x, i
    end
  end
  return nil, nil
end

--- Whether `xs` holds `value` (compared with `==`).
---@param xs any[]
---@param value any
---@return boolean
function list.contains(xs, value)
  for _, x in ipairs(xs) do
    if x == value then
      return true
    end
  end
  return false
end

--- The sorted keys of a table.
---@param t table
---@return any[]
function list.keys(t)
  local out = {}
  for k in pairs(t) do
    out[#out + 1] = k
  end
  table.sort(out, function(a, b)
    return tostring(a) < tostring(b)
  end)
  return out
end

return list
