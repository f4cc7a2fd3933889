--- Arrangements: how the band plays one request together.
---
--- - `solo` — one instrument answers; when it fails to load or errors, the next
---   instrument of its section steps in (fallback).
--- - `comp` — background players each write short notes (context, pitfalls,
---   suggestions) at the same time, under a token budget; the notes go into the
---   soloist's prompt.
--- - `review` — a reviewer that is never the author returns a verdict (approve, or a
---   list of problems; a grammar keeps it to that JSON) and the author revises, for at
---   most `rounds` rounds.
--- - `jam` — every section answers in parallel and a leader merges the answers
---   (mixture of agents).
--- - `cascade` — a small model answers first; a larger one takes over whenever the
---   reviewer rejects.
--- - `perform` — the standard arrangement: route → comp → solo → review.
---
--- Every step is announced on the event bus (narration: "Mingus is reviewing Coltrane's
--- solo") and recorded in the request's trace (`orchestra.trace`), which `answer`
--- returns with the text.
---
--- ```lua
--- local route   = require("orchestra.route")
--- local arrange = require("orchestra.arrange")
--- local router  = route.rules { ... }
---
--- perform = function(req)
---   return arrange.perform(band, req, { router = router, review = { rounds = 2 } })
--- end
---
--- -- the same, step by step:
--- perform = function(req)
---   local section = router:pick(req)
---   local notes   = arrange.comp(arrange.leads(band, { except = { section, "review" } }), req, { max_tokens = 96 })
---   local draft   = assert(arrange.solo(band, section, req, { notes = notes }))
---   draft         = arrange.review(band:reviewer(draft.model), draft, { rounds = 2 })
---   return arrange.answer(req, draft)
--- end
--- ```
---
--- **One argument order.** Every function takes, of these, the ones it needs, in this
--- order: the band, who plays (a model, a section name or a list of them), what they
--- play on (the request, or the draft a reviewer checks), then options:
--- `solo(band, who, req, opts)`, `comp(players, req, opts)`, `review(reviewer, draft, opts)`,
--- `cascade(band, players, req, opts)`, `jam(band, req, opts)`, `perform(band, req, opts)`.
--- (`review(draft, reviewer, opts)`, the old order, still works and says so once.)
---
--- **Who plays** is decided in one place, the runtime's `band:players`: router models
--- (sections in `orchestra.offstage`, by default `routing`) and embedding models never
--- lead, comp, solo or review. **Leaving players out**: `except` takes models, their
--- names and section names, one or a list — `arrange.leads(band, { except = { section,
--- "review" } })`, `band:reviewer { except = soloist }` or simply `band:reviewer(soloist)`.
--- (`["not"] = ...`, the old spelling, still works and says so once.)
---
--- A *draft* is `{ text, player, section, model, band, notes, tool_calls }`: what `solo`, `jam` and
--- `cascade` return and `review` improves (adding `verdict`, and `unreviewed = true`
--- when no reviewer could say whether it is right). Functions that play return
--- `nil, err` when every candidate failed, like `io.open`; misuse raises.
---@class orchestra.arrange
local arrange = {}

local text = require("orchestra.text")
local trace = require("orchestra.trace")

local clock = orchestra.clock

--- Sections whose instruments never play (router models: classifiers, embedders): the
--- same set as `orchestra.offstage`, which the runtime's rule reads.
--- `orchestra.offstage.tuning = true` adds one.
arrange.offstage = orchestra.offstage

--- The GBNF grammar a reviewer's verdict must follow: `{"verdict":"approve"}` or
--- `{"verdict":"revise","problems":["...", ...]}` (one to five problems, single spaces
--- allowed around punctuation).
arrange.VERDICT_GRAMMAR = [[
root ::= "{" sp "\"verdict\"" sp ":" sp ( approve | revise ) sp "}"
approve ::= "\"approve\""
revise ::= "\"revise\"" sp "," sp "\"problems\"" sp ":" sp "[" sp problem ( sp "," sp problem ){0,4} sp "]"
problem ::= "\"" char{1,160} "\""
char ::= [^"\\\x00-\x1f] | "\\" ["\\/nt]
sp ::= " "?
]]

---------------------------------------------------------------------------------------
-- Players

local function is_model(v)
  if type(v) ~= "userdata" then
    return false
  end
  local ok, section = pcall(function()
    return v.section
  end)
  return ok and type(section) == "string"
end

local function stage_name(name)
  return (name:gsub("^%l", string.upper))
end

--- Whether an instrument plays (not a router model offstage, not an embedder): the
--- runtime's rule, `model.plays`.
---@param m userdata
---@return boolean
function arrange.playable(m)
  return is_model(m) and m.plays
end

-- `except` as a list for the runtime: models, names and sections from one value, a
-- list, or a set (`{ code = true }`), with the old `["not"]` spelling merged in.
local function except_list(opts, fname)
  local out = {}
  local function add(v)
    if type(v) == "table" and not is_model(v) then
      for k, x in pairs(v) do
        if type(k) == "string" then
          if x then
            out[#out + 1] = k
          end
        else
          out[#out + 1] = x
        end
      end
    elseif v ~= nil then
      out[#out + 1] = v
    end
  end
  add(opts.except)
  if opts["not"] ~= nil then
    orchestra.deprecated(
      ("`%s(band, { [\"not\"] = ... })`"):format(fname),
      ("write `%s(band, { except = ... })`"):format(fname)
    )
    add(opts["not"])
  end
  return out
end

--- The instruments that play, in band order (`band:players`). Options: `section`
--- (only this section), `except` (models, names or sections to leave out).
---@param band userdata
---@param opts { section?: string, except?: any }|nil
---@return userdata[]
function arrange.players(band, opts)
  opts = opts or {}
  return band:players({ section = opts.section, except = except_list(opts, "arrange.players") })
end

--- The first instrument of a section that plays, or nil.
---@param band userdata
---@param section string
---@return userdata|nil
function arrange.lead(band, section)
  return band:players({ section = section })[1]
end

--- One lead per section that has a player, in the band's section order. Options:
--- `except` — models, names or sections to leave out (one, a list or a set); a model
--- left out hands its section to the next player of it.
---@param band userdata
---@param opts { except?: any }|nil
---@return userdata[]
function arrange.leads(band, opts)
  local except = except_list(opts or {}, "arrange.leads")
  local out = {}
  for _, s in ipairs(band:sections()) do
    local lead = band:players({ section = s, except = except })[1]
    if lead then
      out[#out + 1] = lead
    end
  end
  return out
end

-- The players of a section, raising at the score's line (`level` 3: the caller of the
-- function that called this) when the band has no such section.
local function section_players(band, section, fname)
  for _, s in ipairs(band:sections()) do
    if s == section then
      return band:players({ section = section })
    end
  end
  error(
    ("`%s`: `%s` is not a section of this band; its sections are %s"):format(
      fname,
      tostring(section),
      table.concat(band:sections(), ", ")
    ),
    3
  )
end

-- A reviewer that is none of `except` (names): `band:reviewer`'s rule.
local function pick_reviewer(band, except)
  if not band then
    return nil
  end
  return band:reviewer({ except = except })
end

---------------------------------------------------------------------------------------
-- Prompts

local function prompt_of(req)
  if type(req) == "table" then
    return req.prompt or ""
  end
  return tostring(req or "")
end

-- The request's conversation, copied.
local function conversation(req)
  if type(req) ~= "table" then
    return { { role = "user", content = tostring(req or "") } }
  end
  local msgs = {}
  for i, m in ipairs(req.messages or {}) do
    msgs[i] = {
      role = m.role,
      content = m.content,
      tool_calls = m.tool_calls,
      tool_call_id = m.tool_call_id,
      name = m.name,
    }
  end
  if #msgs == 0 then
    msgs[1] = { role = "user", content = req.prompt or "" }
  end
  return msgs
end

-- The prompt table for `Model:generate`, carrying the client's limits.
local function prompt_table(req, msgs)
  local p = { messages = msgs }
  if type(req) == "table" then
    p.max_tokens = req.max_tokens
    p.temperature = req.temperature
  end
  return p
end

--- The block of band notes the soloist reads: "Notes from the band ...".
---@param notes table[]  from `arrange.comp`
---@param max_chars integer|nil  per note (default 600)
---@return string|nil
function arrange.notes_text(notes, max_chars)
  if type(notes) ~= "table" or #notes == 0 then
    return nil
  end
  local lines = { "Notes from the band (background players; use what helps, ignore the rest):" }
  for _, n in ipairs(notes) do
    lines[#lines + 1] = ("- %s (%s): %s"):format(
      stage_name(n.player),
      n.section or "?",
      trace.clip(n.text, max_chars or 600)
    )
  end
  return table.concat(lines, "\n")
end

-- The conversation with the notes appended to the last user message (not a system
-- message, so the instrument keeps its own system prompt).
local function with_notes(msgs, notes, max_chars)
  local block = arrange.notes_text(notes, max_chars)
  if not block then
    return msgs
  end
  for i = #msgs, 1, -1 do
    if msgs[i].role == "user" then
      msgs[i] = { role = "user", content = msgs[i].content .. "\n\n" .. block }
      return msgs
    end
  end
  msgs[#msgs + 1] = { role = "user", content = block }
  return msgs
end

-- Copies `opts.generate` (extra `Model:generate` options) and sets `max_tokens`.
local function generation(opts, max_tokens)
  local g = {}
  if type(opts.generate) == "table" then
    for k, v in pairs(opts.generate) do
      g[k] = v
    end
  end
  if max_tokens then
    g.max_tokens = max_tokens
  end
  return g
end

-- One generation, timed and recorded in the trace; `text, details` or `nil, err`.
local function play(req, m, role, prompt, gen, on_piece)
  local started = trace.elapsed_ms(trace.of(req))
  local t0 = clock()
  local out, details
  if on_piece then
    out, details = m:stream(prompt, gen or {}, on_piece)
  else
    out, details = m:generate(prompt, gen)
  end
  local ms = (clock() - t0) * 1e3
  if out then
    trace.played(req, m.name, role, details, ms, started)
  end
  return out, details, ms
end

-- `streamed`: pieces of text the failed player had already sent (a mid-stream failure).
local function note_fallback(req, role, from, to, err, streamed)
  local entry = { role = role, from = from, to = to, error = trace.clip(tostring(err), 300) }
  local data = { from = from, to = to, role = role }
  if streamed and streamed > 0 then
    entry.mid_stream, entry.pieces = true, streamed
    data.mid_stream = true
  end
  trace.push(trace.of(req), "fallbacks", entry)
  trace.emit(req, "fallback", data)
end

---------------------------------------------------------------------------------------
-- Solo

--- One instrument answers the request. `who` is a section name (its instruments are
--- tried in order) or a model (then the other instruments of its section, when `band`
--- is given). Returns a draft, or `nil, err` when every candidate failed.
---
--- Options: `notes` (from `comp`, put into the prompt), `stream` (`true`: pieces go to
--- `req:write`; a function: called with each piece), `max_tokens`, `generate` (more
--- `Model:generate` options), `fallback = false` (no stand-ins), `note_chars`.
---@param band userdata|nil
---@param who string|userdata
---@param req table|string
---@param opts table|nil
---@return table|nil draft, string|nil err
function arrange.solo(band, who, req, opts)
  opts = opts or {}
  local candidates, section = {}, nil
  if type(who) == "string" then
    if not band then
      error(("`arrange.solo`: section `%s` needs the band: `arrange.solo(band, %q, req)`"):format(who, who), 2)
    end
    section = who
    candidates = section_players(band, who, "arrange.solo")
    if #candidates == 0 then
      error(
        ("`arrange.solo`: no instrument plays in section `%s`; add one with `band:add(name, { section = %q, ... })`"):format(
          who,
          who
        ),
        2
      )
    end
  elseif is_model(who) then
    section = who.section
    candidates[1] = who
    if band then
      for _, m in ipairs(band:players({ section = section, except = who })) do
        candidates[#candidates + 1] = m
      end
    end
  else
    error(("`arrange.solo` needs a section name or a model as `who`, got %s"):format(type(who)), 2)
  end
  if opts.fallback == false then
    candidates = { candidates[1] }
  end
  local role = opts.role or "solo"
  local prompt = prompt_table(req, with_notes(conversation(req), opts.notes, opts.note_chars))
  -- Only the soloist gets the client's tools (comping and review never do), less any
  -- the arrangement withholds (`tools = false`: all of them; `withhold`: by name).
  if type(req) == "table" and req.tools and opts.tools ~= false then
    local tools, withheld = {}, {}
    for _, name in ipairs(opts.withhold or {}) do
      withheld[name] = true
    end
    for _, tool in ipairs(req.tools) do
      if not withheld[tool.name] then
        tools[#tools + 1] = tool
      end
    end
    if #tools > 0 then
      prompt.tools = tools
      local choice = req.tool_choice
      if type(choice) == "table" and withheld[choice.name] then
        choice = "auto"
      end
      prompt.tool_choice = choice
    end
  end
  local gen = generation(opts, opts.max_tokens)
  local on_piece
  if opts.stream == true and type(req) == "table" and req.write then
    on_piece = function(piece)
      req:write(piece)
    end
  elseif type(opts.stream) == "function" then
    on_piece = opts.stream
  end
  local t = trace.of(req)
  local failures = {}
  -- Pieces the current candidate streamed: a player that fails after some (a remote
  -- server dropping mid-answer) leaves them with the listener, so the stand-in starts
  -- on a fresh line and the trace says so.
  local streamed = 0
  local counted = on_piece and function(piece)
    streamed = streamed + 1
    return on_piece(piece)
  end
  for i, m in ipairs(candidates) do
    if i == 1 then
      if opts.announce ~= false then
        trace.emit(req, "solo", { player = m.name, section = m.section })
      end
    else
      local failed = failures[#failures]
      note_fallback(req, role, candidates[i - 1].name, m.name, failed.error, failed.pieces)
      if failed.pieces and on_piece then
        on_piece("\n\n")
      end
    end
    streamed = 0
    local out, details, ms = play(req, m, role, prompt, gen, counted)
    if out then
      local draft = {
        text = out,
        player = m.name,
        section = m.section,
        model = m,
        band = band,
        request = req,
        notes = opts.notes,
        streamed = on_piece ~= nil,
        tool_calls = details.tool_calls,
      }
      if opts.record ~= false then
        t.solo = {
          player = m.name,
          section = m.section,
          tokens = details.completion_tokens,
          prompt_tokens = details.prompt_tokens,
          finish = details.finish_reason,
          ms = trace.round(ms, 2),
          notes = opts.notes and #opts.notes or 0,
          failed = #failures > 0 and failures or nil,
        }
      end
      return draft
    end
    failures[#failures + 1] = {
      player = m.name,
      error = trace.clip(tostring(details), 300),
      pieces = streamed > 0 and streamed or nil,
    }
  end
  if opts.record ~= false then
    t.solo = { section = section, failed = failures }
  end
  local why = {}
  for _, f in ipairs(failures) do
    why[#why + 1] = f.error
  end
  return nil, ("nobody in section `%s` could play: %s"):format(section, table.concat(why, "; "))
end

--- `model:solo(req, opts)`: `arrange.solo(opts.band, model, req, opts)`.
function orchestra.Model:solo(req, opts)
  opts = opts or {}
  return arrange.solo(opts.band, self, req, opts)
end

---------------------------------------------------------------------------------------
-- Comp

local COMP_SYSTEM = "You are %s, the %s player in a band of AI models. Another player will answer "
  .. "the request below; you are comping, so do not answer it yourself. In at most %d words, "
  .. "write notes that would help: key context, pitfalls to avoid, suggestions. Terse bullet points."

--- The messages a comp player gets: `opts.prompt` (a function, or a system prompt with
--- `%s` for the player's name and section and `%d` for a word budget) and the request.
---@param m userdata  the player
---@param req table|string
---@param max_tokens integer  the player's token budget
---@param opts table|nil  `comp` options
---@return table[] messages
function arrange.comp_messages(m, req, max_tokens, opts)
  opts = opts or {}
  if type(opts.prompt) == "function" then
    return opts.prompt(m, req)
  end
  local system = (opts.prompt or COMP_SYSTEM):format(
    stage_name(m.name),
    m.section,
    math.max(8, math.floor(max_tokens * 2 / 3))
  )
  return { { role = "system", content = system }, { role = "user", content = "Request:\n" .. prompt_of(req) } }
end

--- Background players write short notes about the request, all at the same time (one
--- batch per model, models in parallel). Returns the notes in player order — `{ player,
--- section, text, tokens }` — leaving out players that failed (recorded in the trace).
---
--- Options: `max_tokens` per note (default 96), `budget` (total tokens, shared out
--- evenly), `prompt` (a system prompt with `%s` for name and section and `%d` for
--- words, or `function(player, req) return messages end`), `generate`.
---@param players userdata[]
---@param req table|string
---@param opts table|nil
---@return table[] notes
function arrange.comp(players, req, opts)
  opts = opts or {}
  if type(players) ~= "table" then
    error(("`arrange.comp` needs a list of players first, got %s"):format(type(players)), 2)
  end
  local list = {}
  for _, m in ipairs(players) do
    if is_model(m) and arrange.playable(m) then
      list[#list + 1] = m
    end
  end
  if #list == 0 then
    return {}
  end
  local per = opts.max_tokens or 96
  if opts.budget then
    per = math.min(per, math.floor(opts.budget / #list))
  end
  per = math.max(1, math.floor(per))
  local names = {}
  for i, m in ipairs(list) do
    names[i] = m.name
  end
  trace.emit(req, "comp", { players = names })
  local t0 = clock()
  local t = trace.of(req)
  local parts = {}
  for i, m in ipairs(list) do
    parts[i] = function()
      local msgs = arrange.comp_messages(m, req, per, opts)
      local started = trace.elapsed_ms(t)
      local out, details, ms = play(req, m, "comp", { messages = msgs }, generation(opts, per))
      if not out then
        return nil, details
      end
      return {
        player = m.name,
        section = m.section,
        text = text.trim(out),
        tokens = details.completion_tokens,
        started_ms = trace.round(started, 2),
        ms = trace.round(ms, 2),
      }
    end
  end
  local results, errors = orchestra.together(parts)
  local notes, failed = {}, {}
  for i, m in ipairs(list) do
    local n = results[i]
    if n then
      notes[#notes + 1] = n
    else
      failed[#failed + 1] = { player = m.name, error = trace.clip(tostring(errors and errors[i]), 300) }
    end
  end
  t.comp = {
    players = names,
    max_tokens = per,
    budget = opts.budget,
    notes = notes,
    failed = failed,
    ms = trace.round((clock() - t0) * 1e3, 2),
  }
  return notes
end

---------------------------------------------------------------------------------------
-- Review

local REVIEW_SYSTEM = "You are %s, the band's reviewer. Check the answer another player gave to "
  .. 'the request. Reply with JSON only: {"verdict":"approve"} when it is correct and complete, '
  .. 'otherwise {"verdict":"revise","problems":["..."]} with up to five short, concrete problems.'

-- Added to the reviewer's instruction when its first reply could not be read.
local STRICT = " Your previous reply could not be read as a verdict. Reply with one JSON object and "
  .. 'nothing else: {"verdict":"approve"}, or {"verdict":"revise","problems":["..."]} with at most '
  .. "three problems of at most ten words each."

--- Reads a reviewer's reply: `{ verdict = "approve" }` or `{ verdict = "revise",
--- problems = {...} }`. A reply cut short by `max_tokens` keeps its verdict and the
--- problems that were complete (marked `truncated`). A reply that is not such JSON at
--- all is `{ verdict = "unreadable", unreadable = true, raw = ... }`: never an approval.
---@param reply string
---@return table
function arrange.read_verdict(reply)
  reply = reply or ""
  local v = orchestra.json.decode(reply)
  if type(v) == "table" and type(v.verdict) == "string" then
    if v.verdict == "approve" then
      return { verdict = "approve" }
    end
    local problems = {}
    if type(v.problems) == "table" then
      for _, p in ipairs(v.problems) do
        if type(p) == "string" then
          problems[#problems + 1] = p
        end
      end
    end
    return { verdict = "revise", problems = problems }
  end
  local said = reply:match('"verdict"%s*:%s*"(%a+)"')
  if said == "approve" then
    return { verdict = "approve", truncated = true }
  elseif said then
    local problems = {}
    local list = reply:match('"problems"%s*:%s*%[(.*)$') or ""
    for p in list:gmatch('"([^"]*)"') do
      problems[#problems + 1] = p
    end
    return { verdict = "revise", problems = problems, truncated = true }
  end
  return { verdict = "unreadable", unreadable = true, raw = trace.clip(reply, 200) }
end

local function is_draft(v)
  return type(v) == "table" and type(v.text) == "string"
end

-- The reviewer's prompt: its instruction (`strict` after an unreadable reply), the
-- request and the draft's text as it is now.
local function review_prompt(req, draft, reviewer, opts, strict)
  local system = (opts.system or REVIEW_SYSTEM):format(stage_name(reviewer.name))
  if strict then
    system = system .. STRICT
  end
  return {
    messages = {
      { role = "system", content = system },
      {
        role = "user",
        content = ("Request:\n%s\n\nAnswer by %s:\n%s"):format(
          prompt_of(draft.request or req),
          stage_name(draft.player),
          draft.text
        ),
      },
    },
  }
end

-- One verdict from `r`: an unreadable reply is asked for once more with a stricter
-- instruction and twice the room (under the verdict grammar a reply is only
-- unreadable when it was cut short). Returns the verdict and the last play's details,
-- or `nil, err` when `r` could not play.
local function verdict_of(req, draft, r, opts, gen)
  local reply, details = play(req, r, "review", review_prompt(req, draft, r, opts, false), gen)
  if not reply then
    return nil, details
  end
  local v = arrange.read_verdict(reply)
  if not v.unreadable then
    return v, details
  end
  local retry = {}
  for k, x in pairs(gen) do
    retry[k] = x
  end
  retry.max_tokens = (gen.max_tokens or 256) * 2
  trace.emit(req, "review", { reviewer = r.name, author = draft.player, retry = true })
  local again, more = play(req, r, "review", review_prompt(req, draft, r, opts, true), retry)
  if not again then
    v.retried, v.retry_error = true, trace.clip(tostring(more), 300)
    return v, details
  end
  local second = arrange.read_verdict(again)
  second.retried = true
  second.first_reply = v.raw
  return second, more
end

-- One review: the verdict and the reviewer who gave it, trying other reviewers when
-- one fails to play; nil when none could.
local function review_once(req, draft, reviewer, round, opts)
  local band = draft.band
  local tried = { draft.player }
  local gen = generation(opts, opts.max_tokens or 256)
  if opts.grammar ~= false then
    gen.grammar = opts.grammar or arrange.VERDICT_GRAMMAR
  end
  if gen.temperature == nil and gen.greedy == nil then
    gen.temperature = 0
  end
  gen.system = false
  local r = reviewer
  while r do
    tried[#tried + 1] = r.name
    trace.emit(req, "review", { reviewer = r.name, author = draft.player, round = round })
    local t0 = clock()
    local v, details = verdict_of(req, draft, r, opts, gen)
    if v then
      v.reviewer = r.name
      v.author = draft.player
      v.round = round
      v.prompt_tokens = type(details) == "table" and details.prompt_tokens or nil
      v.ms = trace.round((clock() - t0) * 1e3, 2)
      trace.emit(req, "verdict", { reviewer = r.name, verdict = v.verdict, round = round })
      return v, r
    end
    local next_r = pick_reviewer(band, tried)
    if next_r then
      note_fallback(req, "review", r.name, next_r.name, details)
    else
      trace.push(
        trace.of(req),
        "fallbacks",
        { role = "review", from = r.name, error = trace.clip(tostring(details), 300) }
      )
    end
    r = next_r
  end
  return nil
end

-- The reviewer to use for `draft`: `reviewer` unless it wrote the draft.
local function resolve_reviewer(draft, reviewer)
  if reviewer ~= nil and not is_model(reviewer) then
    error(("`arrange.review`: the reviewer must be a model (or nil to pick one), got %s"):format(type(reviewer)), 3)
  end
  if reviewer and reviewer.name ~= draft.player then
    return reviewer
  end
  if reviewer and not draft.band then
    error(
      ("`arrange.review`: %s cannot review its own draft; pass another reviewer, or a draft from `arrange.solo(band, ...)` so one can be picked"):format(
        reviewer.name
      ),
      3
    )
  end
  return pick_reviewer(draft.band, { draft.player })
end

--- A reviewer checks the draft; on "revise" its author rewrites it with the problems
--- listed, and the new draft is reviewed again — at most `rounds` revisions, and the
--- last revision is reviewed too, so the verdict is always about the text that is
--- returned. The reviewer is never the draft's author: pass nil (or the author) and
--- one is picked from the band's review section, else any other instrument that
--- plays. Returns the final draft with `verdict` (the last verdict).
---
--- A reply that is not a verdict is asked for once more with a stricter instruction;
--- when that is unreadable too, the review stops there: the trace records it
--- (`verdict = "unreadable"`) and the draft is marked `unreviewed` — never approved.
--- So is a draft nobody could review.
---
--- Options: `rounds` (default 2), `max_tokens` for the verdict (default 256),
--- `revise_tokens` for a revision, `grammar` (the reviewer's; `false` for none) and
--- `system`, `generate`.
---@param reviewer userdata|nil
---@param draft table
---@param opts table|nil
---@return table draft
function arrange.review(reviewer, draft, opts)
  if is_draft(reviewer) and not is_draft(draft) then
    orchestra.deprecated(
      "`arrange.review(draft, reviewer, opts)`",
      "write `arrange.review(reviewer, draft, opts)`: every `arrange` function takes who plays before what they play on"
    )
    reviewer, draft = draft, reviewer
  end
  opts = opts or {}
  if not is_draft(draft) then
    error(
      "`arrange.review` needs a reviewer (or nil) and a draft from `arrange.solo`: `arrange.review(band:reviewer(draft.model), draft, { rounds = 2 })`",
      2
    )
  end
  local req = draft.request
  local rounds = math.max(0, opts.rounds or 2)
  local r = resolve_reviewer(draft, reviewer)
  local t = trace.of(req)
  draft.unreviewed = nil
  if not r then
    trace.push(t, "reviews", { author = draft.player, verdict = "skipped", why = "nobody else in the band can review" })
    draft.unreviewed = true
    return draft
  end
  for round = 1, rounds + 1 do
    local v, by = review_once(req, draft, r, round, opts)
    if not v then
      trace.push(
        t,
        "reviews",
        { round = round, author = draft.player, verdict = "skipped", why = "every reviewer failed" }
      )
      draft.unreviewed = true
      break
    end
    trace.push(t, "reviews", v)
    draft.verdict = v
    if v.unreadable then
      draft.unreviewed = true
      break
    end
    -- Approved, or out of revisions: the verdict on this text stands.
    if v.verdict ~= "revise" or round > rounds then
      break
    end
    -- The author plays it again with the problems in front of it.
    local listed = {}
    for i, p in ipairs(v.problems or {}) do
      listed[i] = "- " .. p
    end
    if #listed == 0 then
      listed[1] = "- (no details given)"
    end
    local msgs = with_notes(conversation(req), draft.notes, opts.note_chars)
    msgs[#msgs + 1] = { role = "assistant", content = draft.text }
    msgs[#msgs + 1] = {
      role = "user",
      content = ("%s reviewed your answer and found these problems:\n%s\nWrite the whole answer again with them fixed. Reply with the answer only."):format(
        stage_name(v.reviewer),
        table.concat(listed, "\n")
      ),
    }
    if not is_model(draft.model) then
      trace.push(
        t,
        "revisions",
        { round = round, player = draft.player, error = "the draft carries no model to revise it" }
      )
      break
    end
    trace.emit(req, "revise", { player = draft.player, round = round })
    local out, details, ms =
      play(req, draft.model, "revise", prompt_table(req, msgs), generation(opts, opts.revise_tokens))
    if not out then
      trace.push(t, "revisions", { round = round, player = draft.player, error = trace.clip(tostring(details), 300) })
      break
    end
    trace.push(
      t,
      "revisions",
      { round = round, player = draft.player, tokens = details.completion_tokens, ms = trace.round(ms, 2) }
    )
    draft.text = out
    draft.streamed = false
    draft.revisions = round
    r = by
  end
  return draft
end

---------------------------------------------------------------------------------------
-- Jam

local MERGE_SYSTEM = "You are %s, leading the band. Several players answered the same request. "
  .. "Merge their answers into one answer that keeps the best of each and fixes their mistakes. "
  .. "Reply with the merged answer only."

--- Every section answers at the same time, then a leader merges the answers (mixture
--- of agents). Returns a draft by the leader (`parts`: what each player said), or
--- `nil, err` when nobody could play.
---
--- Options: `players` (default: one lead per section, except review), `leader` (a model
--- or a section name; default the first player), `max_tokens` per part, `generate`.
---@param band userdata
---@param req table|string
---@param opts table|nil
---@return table|nil draft, string|nil err
function arrange.jam(band, req, opts)
  opts = opts or {}
  local players = opts.players or arrange.leads(band, { except = { "review" } })
  if #players == 0 then
    error("`arrange.jam`: nobody to play; the band needs instruments in its sections", 2)
  end
  local names = {}
  for i, m in ipairs(players) do
    names[i] = m.name
  end
  local t = trace.of(req)
  trace.emit(req, "jam", { players = names })
  local prompt = prompt_table(req, conversation(req))
  local gen = generation(opts, opts.max_tokens)
  local fns = {}
  for i, m in ipairs(players) do
    fns[i] = function()
      local out, details = play(req, m, "jam", prompt, gen)
      if not out then
        return nil, details
      end
      return { player = m.name, section = m.section, text = out, tokens = details.completion_tokens }
    end
  end
  local results, errors = orchestra.together(fns)
  local parts, failed = {}, {}
  for i, m in ipairs(players) do
    if results[i] then
      parts[#parts + 1] = results[i]
    else
      failed[#failed + 1] = { player = m.name, error = trace.clip(tostring(errors and errors[i]), 300) }
    end
  end
  t.jam = { players = names, failed = failed }
  if #parts == 0 then
    return nil, "every player of the jam failed"
  end
  -- The leader, then the other players as stand-ins.
  local leader = opts.leader
  if type(leader) == "string" then
    leader = arrange.lead(band, leader)
  end
  leader = leader or players[1]
  local order = { leader }
  for _, m in ipairs(players) do
    if m.name ~= leader.name then
      order[#order + 1] = m
    end
  end
  local answers = {}
  for i, p in ipairs(parts) do
    answers[i] = ("### %s (%s)\n%s"):format(stage_name(p.player), p.section, p.text)
  end
  local merge_prompt = prompt_table(req, {
    { role = "system", content = MERGE_SYSTEM:format(stage_name(leader.name)) },
    {
      role = "user",
      content = ("Request:\n%s\n\nAnswers:\n\n%s"):format(prompt_of(req), table.concat(answers, "\n\n")),
    },
  })
  local last_err
  for i, m in ipairs(order) do
    if i == 1 then
      trace.emit(req, "merge", { leader = m.name })
    else
      note_fallback(req, "merge", order[i - 1].name, m.name, last_err)
    end
    merge_prompt.messages[1].content = MERGE_SYSTEM:format(stage_name(m.name))
    local out, details, ms = play(req, m, "merge", merge_prompt, generation(opts, opts.merge_tokens))
    if out then
      local summary = {}
      for j, p in ipairs(parts) do
        summary[j] = { player = p.player, section = p.section, tokens = p.tokens, text = trace.clip(p.text, 400) }
      end
      t.jam.parts = summary
      t.jam.leader = m.name
      t.jam.merge =
        { tokens = details.completion_tokens, prompt_tokens = details.prompt_tokens, ms = trace.round(ms, 2) }
      return {
        text = out,
        player = m.name,
        section = m.section,
        model = m,
        band = band,
        request = req,
        parts = parts,
      }
    end
    last_err = details
  end
  return nil, "nobody could merge the jam: " .. tostring(last_err)
end

---------------------------------------------------------------------------------------
-- Cascade

--- The smallest player answers first; a reviewer checks; when it asks for a revision
--- the next (larger) player takes over, up to the last, whose answer stands. A player
--- that fails hands over at once. Returns the draft that stood (`escalations`: how
--- many hand-overs), or `nil, err` when nobody could play.
---
--- Options: `reviewer` (never the author; default one from the band per step),
--- `notes`, `max_tokens`, `generate`, and the review's `grammar`/`system`.
---@param band userdata
---@param players (userdata|string)[]  models or section names, smallest first
---@param req table|string
---@param opts table|nil
---@return table|nil draft, string|nil err
function arrange.cascade(band, players, req, opts)
  opts = opts or {}
  if type(players) ~= "table" or #players == 0 then
    error(
      "`arrange.cascade` needs a list of players, smallest first: `arrange.cascade(band, { band.ella, band.monk }, req)`",
      2
    )
  end
  local list = {}
  for i, p in ipairs(players) do
    if type(p) == "string" then
      list[i] = arrange.lead(band, p) or error(("`arrange.cascade`: no instrument plays in section `%s`"):format(p), 2)
    elseif is_model(p) then
      list[i] = p
    else
      error(("`arrange.cascade`: player %d must be a model or a section name, got %s"):format(i, type(p)), 2)
    end
  end
  local t = trace.of(req)
  local steps = {}
  t.cascade = { players = {}, steps = steps, escalations = 0 }
  for i, m in ipairs(list) do
    t.cascade.players[i] = m.name
  end
  local last_err
  for i, m in ipairs(list) do
    local draft, err = arrange.solo(band, m, req, {
      notes = opts.notes,
      fallback = false,
      max_tokens = opts.max_tokens,
      generate = opts.generate,
      record = false,
    })
    local step = { player = m.name }
    steps[#steps + 1] = step
    local is_last = i == #list
    if not draft then
      step.error = trace.clip(tostring(err), 300)
      last_err = err
      if not is_last then
        t.cascade.escalations = t.cascade.escalations + 1
        trace.emit(req, "escalate", { from = m.name, to = list[i + 1].name, why = "failed" })
      end
    else
      draft.request = req
      if is_last then
        step.verdict = "final"
        draft.escalations = t.cascade.escalations
        t.solo = { player = m.name, section = m.section }
        return draft
      end
      local r = resolve_reviewer(draft, opts.reviewer)
      local v = r and review_once(req, draft, r, i, opts)
      if v then
        trace.push(t, "reviews", v)
        step.verdict = v.verdict
        step.reviewer = v.reviewer
        step.problems = v.problems
      else
        step.verdict = "unreviewed"
      end
      -- Only a rejection hands over: an answer nobody could review (or whose verdict
      -- stayed unreadable) stands, marked unreviewed.
      if not v or v.verdict ~= "revise" then
        draft.verdict = v
        draft.unreviewed = (not v or v.unreadable) or nil
        draft.escalations = t.cascade.escalations
        t.solo = { player = m.name, section = m.section }
        return draft
      end
      t.cascade.escalations = t.cascade.escalations + 1
      trace.emit(req, "escalate", { from = m.name, to = list[i + 1].name, why = "rejected" })
    end
  end
  return nil, "every player of the cascade failed: " .. tostring(last_err)
end

---------------------------------------------------------------------------------------
-- Vote

-- What candidates are compared by: the first code block when the answer has one (the
-- program, not the prose around it), else the whole answer; lowercased, spaces collapsed.
function arrange.vote_key(answer)
  local code = (answer or ""):match("```[%w_+%-]*\n(.-)```")
  local key = (code or answer or ""):lower():gsub("%s+", " ")
  return text.trim(key)
end

--- Several takes, one chosen: self-consistency. `n` candidates play at once — the lead
--- of section `who` (or the model `who`) `n` times with seeds `seed`, `seed + 1`, … (one
--- batch when it has `n` slots), or each of `opts.players` once — and `pick` chooses:
--- `"agree"` (default) keeps the answer most candidates share (`arrange.vote_key`: the
--- code block, lowercased, spaces collapsed; a tie goes to the earliest), a function
--- `(candidates, req) -> index, why` decides itself. Returns a draft like
--- `arrange.solo`'s with `votes = { agreeing = k, of = n }`, or `nil, err` when every
--- candidate failed. The trace's `vote` records the takes and the choice.
---
--- ```lua
--- local draft = arrange.vote(band, "code", req, { n = 4, temperature = 0.7 })
--- local draft = arrange.vote(band, "code", req, { players = { band.coltrane, band.monk, band.ella } })
--- ```
---@param band userdata|nil
---@param who string|userdata
---@param req table|string
---@param opts table|nil  `{ n = 4, pick = "agree"|fn, temperature = 0.7, seed = 1, max_tokens, generate, players }`
---@return table|nil draft, string|nil err
function arrange.vote(band, who, req, opts)
  opts = opts or {}
  local players = {}
  if opts.players then
    for i, m in ipairs(opts.players) do
      if not is_model(m) then
        error(("`arrange.vote`: player %d must be a model, got %s"):format(i, type(m)), 2)
      end
      players[i] = m
    end
  else
    local lead
    if is_model(who) then
      lead = who
    elseif type(who) == "string" then
      if not band then
        error(("`arrange.vote`: section `%s` needs the band: `arrange.vote(band, %q, req)`"):format(who, who), 2)
      end
      lead = section_players(band, who, "arrange.vote")[1]
      if not lead then
        error(("`arrange.vote`: no instrument plays in section `%s`"):format(who), 2)
      end
    else
      error(("`arrange.vote` needs a section name or a model as `who`, got %s"):format(type(who)), 2)
    end
    for i = 1, opts.n or 4 do
      players[i] = lead
    end
  end
  local n = #players
  if n == 0 then
    return nil, "`arrange.vote`: nobody to vote"
  end
  local names = {}
  for i, m in ipairs(players) do
    names[i] = m.name
  end
  trace.emit(req, "vote", { players = names, n = n })
  local prompt = prompt_table(req, conversation(req))
  if not opts.players then
    -- One model's takes must differ: they sample at `temperature` even when the client
    -- asked for greedy decoding (its answer is one of the takes, chosen by the vote).
    prompt.temperature = nil
  end
  local t = trace.of(req)
  local t0 = clock()
  local takes = {}
  for i, m in ipairs(players) do
    takes[i] = function()
      local gen = generation(opts, opts.max_tokens)
      -- One model playing several takes needs them to differ; several players differ anyway.
      if not opts.players then
        gen.temperature = gen.temperature or opts.temperature or 0.7
        gen.seed = (opts.seed or 1) + i - 1
      end
      local out, details, ms = play(req, m, "vote", prompt, gen)
      if not out then
        return nil, details
      end
      return { player = m.name, model = m, text = out, tokens = details.completion_tokens, ms = ms }
    end
  end
  local results, errors = orchestra.together(takes)
  local candidates, failed = {}, {}
  for i = 1, n do
    if results[i] then
      candidates[#candidates + 1] = results[i]
    else
      failed[#failed + 1] = { player = names[i], error = trace.clip(tostring(errors and errors[i]), 300) }
    end
  end
  if #candidates == 0 then
    t.vote = { players = names, failed = failed }
    return nil, "`arrange.vote`: every take failed: " .. (failed[1] and failed[1].error or "?")
  end
  local picked, why, agreeing
  if type(opts.pick) == "function" then
    picked, why = opts.pick(candidates, req)
    if type(picked) ~= "number" or not candidates[picked] then
      error(("`arrange.vote`: `pick` must return a candidate's index (1 to %d), got %s"):format(#candidates, tostring(picked)), 2)
    end
  elseif opts.pick == nil or opts.pick == "agree" then
    local counts, first = {}, {}
    for i, c in ipairs(candidates) do
      c.key = arrange.vote_key(c.text)
      counts[c.key] = (counts[c.key] or 0) + 1
      first[c.key] = first[c.key] or i
    end
    local best = 0
    for i, c in ipairs(candidates) do
      if counts[c.key] > best then
        best, picked = counts[c.key], i
      end
    end
    agreeing = best
    why = ("%d of %d takes agree"):format(best, #candidates)
  else
    error(("`arrange.vote`: `pick` is \"agree\" or a function, got %s"):format(tostring(opts.pick)), 2)
  end
  local winner = candidates[picked]
  local entry = { players = names, picked = picked, why = why, agreeing = agreeing, failed = failed, takes = {} }
  for i, c in ipairs(candidates) do
    entry.takes[i] = { player = c.player, tokens = c.tokens, ms = trace.round(c.ms, 2), chars = #c.text }
  end
  entry.ms = trace.round((clock() - t0) * 1e3, 2)
  t.vote = entry
  t.solo = { player = winner.player, section = winner.model.section, tokens = winner.tokens, ms = entry.ms }
  trace.emit(req, "voted", { player = winner.player, picked = picked, of = #candidates, agreeing = agreeing })
  return {
    text = winner.text,
    player = winner.player,
    section = winner.model.section,
    model = winner.model,
    band = band,
    request = req,
    votes = { agreeing = agreeing, of = #candidates, picked = picked },
  }
end

---------------------------------------------------------------------------------------
-- Agents: turns played for an agent, and the calls that may go back to it

--- Why `req` is an agent's turn, or nil when it is not: it offers tools, carries a
--- tool result, or opens with an agent-sized system prompt (`preamble_chars`, default
--- 4000 characters). `arrange.perform` plays such a turn with the soloist alone: the
--- conversation reaches it unchanged (its prefix stays cached from the last turn), and
--- comping and review, which measured no gain on agent turns, are skipped.
---@param req table|string
---@param opts table|nil  `{ preamble_chars = 4000 }`
---@return string|nil why
function arrange.agent_turn(req, opts)
  if type(req) ~= "table" then
    return nil
  end
  if req.tools and #req.tools > 0 then
    return "the request offers tools"
  end
  local preamble = 0
  for _, m in ipairs(req.messages or {}) do
    if m.role == "tool" then
      return "the conversation carries a tool result"
    end
    if m.role == "system" then
      preamble = preamble + #(m.content or "")
    end
  end
  local limit = (opts and opts.preamble_chars) or 4000
  if preamble >= limit then
    return ("the system prompt has %d characters, an agent's preamble"):format(preamble)
  end
  return nil
end

-- Deep equality of decoded JSON values (argument order never matters).
local function same_value(a, b)
  if type(a) ~= type(b) then
    return false
  end
  if type(a) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not same_value(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function same_arguments(x, y)
  if x == y then
    return true
  end
  local ok_a, a = pcall(orchestra.json.decode, x or "{}")
  local ok_b, b = pcall(orchestra.json.decode, y or "{}")
  return ok_a and ok_b and same_value(a, b)
end

--- Whether the conversation already answered `call`: an earlier assistant turn made
--- the same call (same tool, same arguments) and a tool message carries its result.
---@param req table
---@param call table  `{ name, arguments }`
---@return boolean
function arrange.already_answered(req, call)
  if type(req) ~= "table" then
    return false
  end
  local answered = {}
  for _, m in ipairs(req.messages or {}) do
    if m.role == "tool" and m.tool_call_id then
      answered[m.tool_call_id] = true
    end
  end
  for _, m in ipairs(req.messages or {}) do
    for _, c in ipairs(m.tool_calls or {}) do
      if c.name == call.name and answered[c.id] and same_arguments(c.arguments, call.arguments) then
        return true
      end
    end
  end
  return false
end

-- Words that ask for a change in the user's own request.
local CHANGE_WORDS = {
  "write", "edit", "change", "modify", "update", "create", "save", "delete", "remove",
  "rename", "replace", "fix", "append", "insert", "run", "execute", "install", "commit",
  "send", "refactor", "overwrite", "patch", "move", "make",
}

--- Tools that change files, run commands or reach beyond the conversation (OpenClaw's
--- names among them). A score names its own with `tool_policy = arrange.careful_tools
--- { side_effects = { ... } }`.
arrange.SIDE_EFFECT_TOOLS = {
  "write", "edit", "apply_patch", "exec", "process", "bash", "shell", "run",
  "message", "cron", "gateway", "nodes", "write_file", "edit_file", "delete_file",
}

-- The last user message's words, lowercased.
local function last_user_words(req)
  local last = type(req) == "table" and req.prompt or tostring(req or "")
  local words = {}
  for w in last:lower():gmatch("[%a_]+") do
    words[w] = true
  end
  return words
end

--- The default tool-call policy for small soloists, as a function `(req, calls) ->
--- kept, blocked` (`blocked`: `{ call, why }` entries). A call goes back to the client
--- only when the conversation has not answered it already, when it changes nothing
--- (no tool of `side_effects`) or the user's last message asks for a change, and at
--- most `max_calls` (default 1) per turn. `arrange.perform` asks the soloist again
--- with the blocked tools withheld when nothing is kept.
---
--- ```lua
--- arrange.perform(band, req, { tool_policy = arrange.careful_tools { side_effects = { "write", "exec" } } })
--- arrange.perform(band, req, { tool_policy = false })  -- every call goes back as made
--- ```
---@param opts table|nil  `{ side_effects = {...}, max_calls = 1, change_words = {...} }`
---@return function policy
function arrange.careful_tools(opts)
  opts = opts or {}
  local side = {}
  for _, name in ipairs(opts.side_effects or arrange.SIDE_EFFECT_TOOLS) do
    side[name] = true
  end
  local max_calls = opts.max_calls or 1
  local change_words = opts.change_words or CHANGE_WORDS
  return function(req, calls)
    local words = last_user_words(req)
    local asks_change = false
    for _, w in ipairs(change_words) do
      if words[w] then
        asks_change = true
        break
      end
    end
    local kept, blocked = {}, {}
    for _, call in ipairs(calls) do
      local why
      if arrange.already_answered(req, call) then
        why = "the conversation already has its result"
      elseif side[call.name] and not asks_change then
        why = "it changes files or runs commands, and the request asks for no change"
      elseif #kept >= max_calls then
        why = ("at most %d call%s per turn"):format(max_calls, max_calls == 1 and "" or "s")
      end
      if why then
        blocked[#blocked + 1] = { call = call, why = why }
      else
        kept[#kept + 1] = call
      end
    end
    return kept, blocked
  end
end

-- Applies the tool policy to a draft's calls: blocked calls never reach the client;
-- when none is left, the soloist is asked again with the blocked tools withheld (once),
-- so it answers from what the conversation has. The trace and a `tool_guard` event
-- say what was blocked and why.
local function guard_tools(band, section, req, solo, draft, policy)
  local kept, blocked = policy(req, draft.tool_calls)
  if #blocked == 0 then
    return draft
  end
  local t = trace.of(req)
  local entry = { blocked = {}, kept = #kept }
  local withhold = {}
  for _, b in ipairs(blocked) do
    entry.blocked[#entry.blocked + 1] = { name = b.call.name, arguments = trace.clip(b.call.arguments or "", 200), why = b.why }
    withhold[#withhold + 1] = b.call.name
  end
  t.tools = entry
  trace.emit(req, "tool_guard", { player = draft.player, blocked = entry.blocked, kept = #kept })
  if #kept > 0 then
    draft.tool_calls = kept
    return draft
  end
  local again = {}
  for k, v in pairs(solo) do
    again[k] = v
  end
  again.withhold, again.announce, again.record = withhold, false, false
  -- A repeated call means the result is there: answer from it, with no tools at all.
  for _, b in ipairs(blocked) do
    if b.why == "the conversation already has its result" then
      again.tools = false
    end
  end
  entry.asked_again = again.tools == false and "without tools" or ("without " .. table.concat(withhold, ", "))
  local second = arrange.solo(band, section, req, again)
  if not second then
    draft.tool_calls = nil
    return draft
  end
  if second.tool_calls and #second.tool_calls > 0 then
    local kept2 = policy(req, second.tool_calls)
    second.tool_calls = #kept2 > 0 and kept2 or nil
  end
  return second
end

---------------------------------------------------------------------------------------
-- Answer and the standard arrangement

--- The answer `perform` returns: the text (also written to `req:write` unless it was
--- streamed already), who played, the last verdict, `unreviewed = true` when a review
--- was wanted but nobody could give a readable verdict, and the finished trace.
---@param req table|string
---@param draft table
---@return table `{ text, player, section, verdict, unreviewed, trace }`
function arrange.answer(req, draft)
  if type(draft) ~= "table" or type(draft.text) ~= "string" then
    error("`arrange.answer` needs a draft (a table with `text`), got " .. type(draft), 2)
  end
  local t = trace.of(req)
  t.answer = {
    player = draft.player,
    section = draft.section,
    chars = #draft.text,
    revisions = draft.revisions,
    unreviewed = draft.unreviewed,
  }
  if not draft.streamed and type(req) == "table" and req.write then
    req:write(draft.text)
  end
  return {
    text = draft.text,
    player = draft.player,
    section = draft.section,
    tool_calls = draft.tool_calls,
    verdict = draft.verdict and draft.verdict.verdict,
    unreviewed = draft.unreviewed,
    trace = trace.finish(req),
  }
end

--- The standard arrangement: route the request to a section, let the leads of the
--- other sections comp, the section's lead solo (with fallback), a reviewer check it
--- (every revision included), and answer with the trace.
---
--- Options: `router` (from `route.rules`; `route.default` when you set one) or
--- `section` (always this section, no routing), `comp` (`comp` options, or false;
--- `players` overrides who comps), `review` (`review` options with `reviewer`, or
--- false), `solo` (`solo` options), `sections` (per section: `{ comp = false,
--- review = false, why = "..." }` leaves those parts out there, or gives that section
--- its own `comp`/`review` options; the trace's `skipped` carries `why`), `agent` (`false` plays agents' turns like any
--- other; a table is `arrange.agent_turn`'s options), `tool_policy` (a function
--- `(req, calls) -> kept, blocked`, default `arrange.careful_tools()`; false lets every
--- call through).
---
--- An agent's turn (`arrange.agent_turn`: tools offered, a tool result, a long system
--- prompt) is played by the soloist alone, streaming, and the trace's `skipped` says
--- why comping and review did not play. Tool calls pass the policy before they go back.
---
--- ```lua
--- arrange.perform(band, req, { router = router, comp = { max_tokens = 64 }, review = { rounds = 1 } })
--- arrange.perform(band, req, { section = "code", review = { reviewer = band.mingus } })
--- ```
---@param band userdata
---@param req table
---@param opts table|nil
---@return table answer
function arrange.perform(band, req, opts)
  opts = opts or {}
  local section = opts.section
  if section == nil then
    local router = opts.router or require("orchestra.route").default
    if not router then
      error(
        "`arrange.perform` needs a router or a section: `arrange.perform(band, req, { router = route.rules { ... } })` or `{ section = \"code\" }`",
        2
      )
    end
    section = router:pick(req)
  end
  if #section_players(band, section, "arrange.perform") == 0 then
    error(("`arrange.perform`: section `%s` was picked, where no instrument plays"):format(section), 2)
  end
  local t = trace.of(req)
  local function skip(part, why)
    t.skipped = t.skipped or {}
    t.skipped[#t.skipped + 1] = { part = part, why = why }
  end
  -- The score's word for this section: parts it leaves out, and why.
  local per = opts.sections and opts.sections[section] or {}
  local comp_on, review_on = opts.comp ~= false, opts.review ~= false
  for _, part in ipairs({ "comp", "review" }) do
    if per[part] == false and (part == "comp" and comp_on or part == "review" and review_on) then
      skip(part, per.why or ("the score plays section `" .. section .. "` without it"))
      if part == "comp" then
        comp_on = false
      else
        review_on = false
      end
    end
  end
  -- An agent's turn is the soloist's alone (`agent = false` plays it like any other).
  local agent = opts.agent ~= false and arrange.agent_turn(req, opts.agent)
  local notes
  if comp_on and agent then
    skip("comp", "an agent's turn: " .. agent)
  elseif comp_on then
    local comp = per.comp or opts.comp or {}
    local players = comp.players or arrange.leads(band, { except = { section, "review" } })
    notes = arrange.comp(players, req, comp)
  end
  local reviewing = review_on
  if reviewing and agent then
    skip("review", "an agent's turn: " .. agent)
    reviewing = false
  end
  local solo = {}
  for k, v in pairs(opts.solo or {}) do
    solo[k] = v
  end
  solo.notes = notes
  if solo.stream == nil then
    solo.stream = not reviewing
  end
  local draft, err = arrange.solo(band, section, req, solo)
  if not draft then
    error(err, 0)
  end
  if draft.tool_calls and #draft.tool_calls > 0 and opts.tool_policy ~= false then
    draft = guard_tools(band, section, req, solo, draft, opts.tool_policy or arrange.careful_tools())
  end
  draft.request = req
  -- A tool call is not prose to review: the client runs it and asks again.
  if reviewing and not draft.tool_calls then
    local review = per.review or opts.review or {}
    draft = arrange.review(review.reviewer, draft, review)
  end
  return arrange.answer(req, draft)
end

return arrange
