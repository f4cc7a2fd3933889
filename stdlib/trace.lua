--- The arrangement trace: the story of one answer. Who routed the request and why,
--- who comped with which notes, who soloed, every review verdict and revision, every
--- fallback and escalation, and how each instrument played (tempo and swing).
---
--- `orchestra.route` and `orchestra.arrange` record into the trace of the request they
--- play (`trace.of(req)`), and `arrange.answer(req, draft)` hands it back with the
--- answer, as plain data: `orchestra play --trace` prints it, and it travels as JSON
--- in the answer's `data.trace`.
---
--- **Tempo** — an instrument's decode speed, in tokens per second: the tokens it
--- generated after the first one, over the time between them. Prompt processing and
--- waiting for a slot do not count.
---
--- **Swing** — how steady its token timing was: `1 / (1 + cv)`, where `cv` is the
--- coefficient of variation of the gaps between consecutive tokens (their standard
--- deviation over their mean). 1.0 is a metronome; 0.5 means the gaps vary as much as
--- they last; lower is choppier (sharing batches with other requests, a busy CPU).
--- Over several generations the gaps are pooled, so a long answer weighs more than a
--- short note.
---
--- ```lua
--- local trace = require("orchestra.trace")
--- local t = trace.of(req)            -- this request's trace, created on first use
--- trace.swing(12.0, 3.0)             --> 0.8
--- return { text = answer, trace = trace.finish(req) }
--- ```
---@class orchestra.trace
local trace = {}

-- Traces by request table; weak keys, so a finished request's trace goes with it.
local traces = setmetatable({}, { __mode = "k" })

local clock = orchestra.clock

---@param req table|string|nil
---@return string
local function prompt_of(req)
  if type(req) == "table" then
    return req.prompt or ""
  end
  return tostring(req or "")
end

--- At most `n` bytes of `s`, with `…` when cut.
---@param s string
---@param n integer
---@return string
function trace.clip(s, n)
  s = s or ""
  if #s <= n then
    return s
  end
  -- Do not cut a UTF-8 character in half: back up to the start of one.
  local cut = n
  while cut > 0 and (string.byte(s, cut + 1) or 0) >= 0x80 and (string.byte(s, cut + 1) or 0) < 0xC0 do
    cut = cut - 1
  end
  return string.sub(s, 1, cut) .. "…"
end

--- A fresh trace (not attached to a request).
---@param req table|string|nil
---@return table
function trace.new(req)
  return {
    request = trace.clip(prompt_of(req), 300),
    started = clock(),
    timeline = {},
    plays = {},
  }
end

--- The trace of a request, created on first use. A string or nil gets a fresh trace
--- each time (nothing to attach it to).
---@param req table|string|nil
---@return table
function trace.of(req)
  if type(req) ~= "table" then
    return trace.new(req)
  end
  local t = traces[req]
  if t == nil then
    t = trace.new(req)
    traces[req] = t
  end
  return t
end

--- Milliseconds since the trace started.
---@param t table
---@return number
function trace.elapsed_ms(t)
  return (clock() - t.started) * 1e3
end

--- Appends `item` to the list `t[key]`, creating it.
---@param t table
---@param key string
---@param item any
function trace.push(t, key, item)
  local list = t[key]
  if list == nil then
    list = {}
    t[key] = list
  end
  list[#list + 1] = item
  return item
end

--- Publishes an arrangement event on the bus (for narration, the stage page, logs)
--- and records it on the request's timeline.
---@param req table|nil
---@param name string  one of the names `orchestra.narrate` knows: routed, solo, comp, review, verdict, revise, jam, merge, escalate, fallback
---@param data table
function trace.emit(req, name, data)
  orchestra.emit(name, data)
  local t = trace.of(req)
  local entry = { at_ms = math.floor(trace.elapsed_ms(t) * 1000 + 0.5) / 1000, event = name }
  for k, v in pairs(data) do
    entry[k] = v
  end
  trace.push(t, "timeline", entry)
end

--- Swing from the mean and standard deviation of inter-token gaps: `1 / (1 + std/mean)`;
--- nil when there is nothing to measure.
---@param gap_mean_ms number|nil
---@param gap_std_ms number|nil
---@return number|nil
function trace.swing(gap_mean_ms, gap_std_ms)
  if not gap_mean_ms or gap_mean_ms <= 0 or not gap_std_ms or gap_std_ms ~= gap_std_ms then
    return nil
  end
  return 1 / (1 + gap_std_ms / gap_mean_ms)
end

local function round(x, places)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then
    return nil
  end
  local m = 10 ^ (places or 0)
  return math.floor(x * m + 0.5) / m
end
trace.round = round

--- Records one generation: who played, in which role, and the `details` that
--- `Model:generate` returned (tokens and timings). Returns the record.
---@param req table|nil
---@param player string
---@param role string  route, comp, solo, review, revise, jam, merge
---@param details table|nil
---@param ms number|nil  wall-clock milliseconds of the call
---@param started_ms number|nil  when the call started (ms into the trace; default now - ms)
---@return table
function trace.played(req, player, role, details, ms, started_ms)
  local t = trace.of(req)
  local record = {
    player = player,
    role = role,
    ms = round(ms, 2),
    started_ms = round(started_ms or (trace.elapsed_ms(t) - (ms or 0)), 3),
  }
  if type(details) == "table" then
    record.tokens = details.completion_tokens
    record.prompt_tokens = details.prompt_tokens
    record.prompt_sources = details.prompt_sources
    record.finish = details.finish_reason
    record.remote = details.remote
    local timings = details.timings
    if type(timings) == "table" then
      record.tempo = round(timings.decode_tok_s, 1)
      record.gap_mean_ms = timings.gap_mean_ms
      record.gap_std_ms = timings.gap_std_ms
      record.ttft_ms = round(timings.ttft_ms, 2)
      record.swing = round(trace.swing(timings.gap_mean_ms, timings.gap_std_ms), 3)
    end
  end
  trace.push(t, "plays", record)
  return record
end

-- Tempo and swing of an instrument over all its generations: the gaps of every
-- generation pooled (count, mean, variance), as if it had been one long phrase.
local function pooled(plays)
  local gaps, sum, sumsq = 0, 0, 0
  local tokens, calls, ms, roles, seen = 0, 0, 0, {}, {}
  local out_remote
  for _, p in ipairs(plays) do
    calls = calls + 1
    tokens = tokens + (p.tokens or 0)
    ms = ms + (p.ms or 0)
    if not seen[p.role] then
      seen[p.role] = true
      roles[#roles + 1] = p.role
    end
    out_remote = out_remote or p.remote
    local n = (p.tokens or 0) - 1
    local mean, std = p.gap_mean_ms, p.gap_std_ms
    if n >= 1 and mean and mean > 0 then
      std = std or 0
      gaps = gaps + n
      sum = sum + n * mean
      -- Sum of squares of this generation's gaps: (n-1)·std² + n·mean².
      sumsq = sumsq + (n - 1) * std * std + n * mean * mean
    end
  end
  local out = { calls = calls, tokens = tokens, ms = round(ms, 1), roles = roles, remote = out_remote }
  if gaps >= 1 then
    local mean = sum / gaps
    local var = gaps > 1 and math.max(0, (sumsq - gaps * mean * mean) / (gaps - 1)) or 0
    out.tempo = round(1000 / mean, 1)
    out.swing = round(trace.swing(mean, math.sqrt(var)), 3)
  end
  return out
end

--- The tempo and swing of every instrument that played, in order of first entrance.
---@param t table  a trace
---@return table[]  `{ name, roles, calls, tokens, ms, tempo, swing }`
function trace.instruments(t)
  -- Plays are recorded as they finish; the story goes by when they started.
  local plays = {}
  for i, p in ipairs(t.plays or {}) do
    plays[i] = { p, i }
  end
  table.sort(plays, function(a, b)
    local sa, sb = a[1].started_ms or 0, b[1].started_ms or 0
    if sa ~= sb then
      return sa < sb
    end
    return a[2] < b[2]
  end)
  local order, by = {}, {}
  for _, pair in ipairs(plays) do
    local p = pair[1]
    if not by[p.player] then
      by[p.player] = {}
      order[#order + 1] = p.player
    end
    local list = by[p.player]
    list[#list + 1] = p
  end
  local out = {}
  for i, name in ipairs(order) do
    local row = pooled(by[name])
    row.name = name
    out[i] = row
  end
  return out
end

-- Empty tables read as `{}` in JSON whatever they meant; leave them out instead.
local function prune(t, depth)
  if depth > 8 then
    return
  end
  for k, v in pairs(t) do
    if type(v) == "table" then
      if next(v) == nil then
        t[k] = nil
      else
        prune(v, depth + 1)
      end
    end
  end
end

--- The finished trace of a request, as plain data: instruments summarised, total time
--- set, empty lists left out. Safe to call more than once.
---@param req table|nil
---@return table
function trace.finish(req)
  local t = trace.of(req)
  t.instruments = trace.instruments(t)
  t.ms = round(trace.elapsed_ms(t), 1)
  prune(t, 0)
  return t
end

return trace
