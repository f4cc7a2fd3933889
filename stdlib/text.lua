--- Text helpers for scores: words, keyword matching, trimming.
---
--- ```lua
--- local text = require("orchestra.text")
--- if text.has_any(req.prompt, { "function", "bug", "rust" }) then ... end
--- ```
---@class orchestra.text
local text = {}

--- The lowercase words of `s` (letters, digits, `_`, `'` and `+` kept inside words).
---@param s string
---@return string[]
function text.words(s)
  local out = {}
  for word in string.gmatch(string.lower(s or ""), "[%w_'+#]+") do
    out[#out + 1] = word
  end
  return out
end

--- How many of `s`'s words are in `keywords` (case-insensitive; a keyword with a space
--- matches as a phrase).
---@param s string
---@param keywords string[]
---@return integer
function text.count_any(s, keywords)
  local lower = " " .. table.concat(text.words(s), " ") .. " "
  local n = 0
  for _, k in ipairs(keywords) do
    local needle = " " .. table.concat(text.words(k), " ") .. " "
    local from = 1
    while true do
      local i, j = string.find(lower, needle, from, true)
      if not i then
        break
      end
      n = n + 1
      from = j
    end
  end
  return n
end

--- Whether any of `keywords` appears in `s` as a word (or phrase).
---@param s string
---@param keywords string[]
---@return boolean
function text.has_any(s, keywords)
  return text.count_any(s, keywords) > 0
end

--- `s` without leading and trailing whitespace.
---@param s string
---@return string
function text.trim(s)
  return (string.gsub(s, "^%s*(.-)%s*$", "%1"))
end

--- At most `n` characters of `s` (bytes for non-ASCII), with `…` when cut.
---@param s string
---@param n integer
---@return string
function text.truncate(s, n)
  if #s <= n then
    return s
  end
  return string.sub(s, 1, n) .. "…"
end

--- Whether `s` starts with `prefix`.
---@param s string
---@param prefix string
---@return boolean
function text.starts_with(s, prefix)
  return string.sub(s, 1, #prefix) == prefix
end

--- Splits `s` at every occurrence of the plain string `sep`.
---@param s string
---@param sep string
---@return string[]
function text.split(s, sep)
  local out, from = {}, 1
  while true do
    local i, j = string.find(s, sep, from, true)
    if not i then
      out[#out + 1] = string.sub(s, from)
      return out
    end
    out[#out + 1] = string.sub(s, from, i - 1)
    from = j + 1
  end
end

return text
