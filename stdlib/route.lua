--- Routing: which section of the band plays a request. An ordered list of rules; the
--- first rule that matches decides. Rules name *sections*, never models, so swapping
--- a model is a one-line edit of `band:add`.
---
--- ```lua
--- local route = require("orchestra.route")
---
--- local router = route.rules({
---   { when = route.keywords { "function", "bug", "compile", "rust" }, section = "code" },
---   { when = route.pattern("```"), section = "code" },                 -- a Lua pattern
---   { when = function(prompt) return #prompt > 4000 end, section = "analysis" },
---   { when = route.semantic(band.duke, { code = { ... }, creative = { ... } }) },
---   { when = route.classifier(band.basie, { sections = { "code", "creative", "analysis" } }) },
---   { otherwise = "analysis" },
--- }, { band = band })                      -- optional: check the sections now
---
--- local section = router:pick(req)          -- emits `routed`, records the trace
--- local why = router:explain("write a haiku") -- which rule decided, and why
--- ```
---
--- `route.rules` only builds a router: it changes nothing in this module, so two sets
--- of rules in one score (or in a module it requires) never overwrite each other.
--- `route.pick(req)` and `route.explain(req)` use `route.default`, which is set only
--- when you set it: `route.default = route.rules { ... }`.
---
--- A rule is `{ when = MATCHER, section = NAME }`, `{ when = DECIDER }` (a classifier or
--- semantic matcher names the section itself) or `{ otherwise = NAME }`, with an
--- optional `name` shown in explanations. A matcher is one of the `route.*` values
--- below or any function `f(prompt, req)`: a truthy result matches, and a string
--- result names the section when the rule has none.
---@class orchestra.route
local route = {}

local text = require("orchestra.text")
local trace = require("orchestra.trace")

local clock = orchestra.clock

---@class orchestra.Decision
---@field section string|nil   the section that plays (nil: no rule matched)
---@field rule integer|nil     index of the deciding rule
---@field name string|nil      the rule's `name`
---@field kind string|nil      keywords, pattern, predicate, classifier, semantic, otherwise
---@field why string           one line for people
---@field matched string[]|nil keywords or pattern matches
---@field answer string|nil    what the classifier said
---@field scores table|nil     semantic: best cosine similarity per section
---@field nearest string|nil   semantic: the closest example request
---@field model string|nil     the instrument that classified or embedded
---@field tried table[]        the rules before it that did not match, and why
---@field us number            decision time in microseconds

local Matcher = {}
Matcher.__index = Matcher

local function matcher(kind, fields)
  fields.kind = kind
  return setmetatable(fields, Matcher)
end

local function is_matcher(v)
  return getmetatable(v) == Matcher
end

local function quote_list(words)
  local out = {}
  for i, w in ipairs(words) do
    out[i] = ("%q"):format(w)
  end
  return table.concat(out, ", ")
end

local function prompt_of(req)
  if type(req) == "string" then
    return req
  end
  if type(req) == "table" then
    return req.prompt or ""
  end
  error(("`route`: a request is a string or a request table, got %s"):format(type(req)), 3)
end

--- Matches when the request contains any of `words` as whole words or phrases
--- (case-insensitive): `route.keywords { "bug", "stack trace" }`.
---@param words string[]
---@return table matcher
function route.keywords(words)
  if type(words) ~= "table" or #words == 0 then
    error('`route.keywords` needs a list of words: `route.keywords { "bug", "rust" }`', 2)
  end
  local needles = {}
  for i, w in ipairs(words) do
    if type(w) ~= "string" then
      error(("`route.keywords`: word %d must be a string, got %s"):format(i, type(w)), 2)
    end
    needles[i] = { word = w, padded = " " .. table.concat(text.words(w), " ") .. " " }
  end
  return matcher("keywords", {
    words = words,
    test = function(_, prompt)
      local hay = " " .. table.concat(text.words(prompt), " ") .. " "
      local hits = {}
      for _, n in ipairs(needles) do
        if string.find(hay, n.padded, 1, true) then
          hits[#hits + 1] = n.word
        end
      end
      if #hits == 0 then
        return nil, "none of its words"
      end
      return { matched = hits, why = "matched words " .. quote_list(hits) }
    end,
  })
end

--- Matches when any of the Lua patterns matches the request (case-sensitive, as Lua
--- patterns are): `route.pattern("```", "%f[%w]fn%s+%w+%(")`.
---@param ... string
---@return table matcher
function route.pattern(...)
  local patterns = { ... }
  if #patterns == 0 then
    error('`route.pattern` needs at least one Lua pattern: `route.pattern("```")`', 2)
  end
  for i, p in ipairs(patterns) do
    if type(p) ~= "string" then
      error(("`route.pattern`: pattern %d must be a string, got %s"):format(i, type(p)), 2)
    end
    local ok, err = pcall(string.find, "", p)
    if not ok then
      error(("`route.pattern`: %q is not a valid Lua pattern: %s"):format(p, err), 2)
    end
  end
  return matcher("pattern", {
    patterns = patterns,
    test = function(_, prompt)
      for _, p in ipairs(patterns) do
        local i, j = string.find(prompt, p)
        if i then
          local hit = trace.clip(string.sub(prompt, i, j), 40)
          return { matched = { hit }, pattern = p, why = ("pattern %q matched %q"):format(p, hit) }
        end
      end
      return nil, "no pattern matched"
    end,
  })
end

local DESCRIPTIONS = {
  code = "programming: writing, fixing, explaining or reviewing code, tools, errors",
  creative = "creative writing: stories, poems, lyrics, jokes, names, slogans",
  analysis = "explaining, comparing, summarising, reasoning about facts and data",
  review = "critiquing or checking a given text",
}

--- A GBNF grammar that allows exactly one of `names`.
---@param names string[]
---@return string
function route.choice_grammar(names)
  local alts = {}
  for i, n in ipairs(names) do
    alts[i] = '"' .. n:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
  end
  return "root ::= " .. table.concat(alts, " | ")
end

--- Asks a (small) model to name the section. A grammar allows only the section names,
--- so the answer is always a valid section, even from a model that knows nothing.
---
--- Options: `sections` (default `{ "code", "creative", "analysis" }`), `descriptions`
--- (section → one line for the prompt), `system` (the whole instruction), any sampling
--- field (default greedy).
---@param model userdata  a band instrument
---@param opts table|nil
---@return table matcher
function route.classifier(model, opts)
  if type(model) ~= "userdata" then
    error(
      ("`route.classifier` needs a model first (`route.classifier(band.basie, {...})`), got %s"):format(type(model)),
      2
    )
  end
  opts = opts or {}
  local sections = opts.sections or { "code", "creative", "analysis" }
  if type(sections) ~= "table" or #sections == 0 then
    error("`route.classifier`: `sections` must list at least one section", 2)
  end
  local longest = 0
  local lines = {}
  local descriptions = opts.descriptions or {}
  for i, s in ipairs(sections) do
    longest = math.max(longest, #s)
    lines[i] = ("- %s: %s"):format(s, descriptions[s] or DESCRIPTIONS[s] or s)
  end
  local system = opts.system
    or (
      "You route requests to one section of a band of AI models. The sections:\n"
      .. table.concat(lines, "\n")
      .. "\nAnswer with the name of the one section that should answer, nothing else."
    )
  local grammar = route.choice_grammar(sections)
  local generate_opts = { grammar = grammar, temperature = 0, system = false }
  for k, v in pairs(opts) do
    if k ~= "sections" and k ~= "descriptions" and k ~= "system" then
      generate_opts[k] = v
    end
  end
  -- Every token adds at least one byte, so this always leaves room for the longest name.
  generate_opts.max_tokens = longest + 2
  local valid = {}
  for _, s in ipairs(sections) do
    valid[s] = true
  end
  return matcher("classifier", {
    decides = true,
    model = model,
    sections = sections,
    grammar = grammar,
    test = function(_, prompt, req)
      local t0 = clock()
      local answer, details = model:generate({
        messages = { { role = "system", content = system }, { role = "user", content = prompt } },
      }, generate_opts)
      trace.played(req, model.name, "route", answer and details, (clock() - t0) * 1e3)
      if not answer then
        return nil, ("%s could not classify: %s"):format(model.name, details)
      end
      local name = text.trim(answer)
      if not valid[name] then
        return nil, ("%s answered %q, not a section"):format(model.name, name)
      end
      return { answer = name, section = name, model = model.name, why = ("%s named %q"):format(model.name, name) }
    end,
  })
end

local function norm(v)
  local s = 0
  for i = 1, #v do
    s = s + v[i] * v[i]
  end
  return math.sqrt(s)
end

--- Cosine similarity of two vectors (lists of numbers).
---@param a number[]
---@param b number[]
---@return number
function route.cosine(a, b)
  local dot = 0
  for i = 1, math.min(#a, #b) do
    dot = dot + a[i] * b[i]
  end
  local n = norm(a) * norm(b)
  if n == 0 then
    return 0
  end
  return dot / n
end

--- Embeds the request with an embedding model (`band:add(..., { embeddings = true })`)
--- and picks the section whose example requests are nearest (cosine similarity of the
--- closest example). The examples are embedded once, on first use.
---
--- Options: `threshold` — below this similarity the rule does not match and the next
--- rule decides (default: always decide).
---@param model userdata  an instrument loaded with `embeddings = true`
---@param examples table<string, string[]>  section → example requests
---@param opts table|nil
---@return table matcher
function route.semantic(model, examples, opts)
  if type(model) ~= "userdata" then
    error(
      ("`route.semantic` needs an embedding model first (`route.semantic(band.duke, examples)`), got %s"):format(
        type(model)
      ),
      2
    )
  end
  if type(examples) ~= "table" or next(examples) == nil then
    error('`route.semantic` needs example requests per section: `{ code = { "fix this stack trace" }, ... }`', 2)
  end
  opts = opts or {}
  -- Sections in a fixed order, so ties and explanations are stable.
  local sections = {}
  for s, list in pairs(examples) do
    if type(s) ~= "string" or type(list) ~= "table" or #list == 0 then
      error(
        ("`route.semantic`: examples must map section names to lists of requests, got %s = %s"):format(
          tostring(s),
          type(list)
        ),
        2
      )
    end
    sections[#sections + 1] = s
  end
  table.sort(sections)
  local m = matcher("semantic", {
    decides = true,
    model = model,
    examples = examples,
    sections = sections,
    threshold = opts.threshold,
  })
  local vectors -- { { section, text, vector }, ... } once embedded

  local function ensure(req)
    if vectors then
      return true
    end
    local texts, owners = {}, {}
    for _, s in ipairs(sections) do
      for _, e in ipairs(examples[s]) do
        texts[#texts + 1] = e
        owners[#owners + 1] = s
      end
    end
    local t0 = clock()
    local vs, err = model:embed(texts)
    if not vs then
      return nil, err
    end
    trace.played(req, model.name, "route", nil, (clock() - t0) * 1e3)
    local out = {}
    for i, v in ipairs(vs) do
      out[i] = { section = owners[i], text = texts[i], vector = v, norm = norm(v) }
    end
    vectors = out
    return true
  end

  --- The embedded examples (for inspection): `{ section, text }` in order.
  function m.embedded()
    return vectors
  end

  m.test = function(self, prompt, req)
    local ok, err = ensure(req)
    if not ok then
      return nil, ("%s could not embed the examples: %s"):format(model.name, err)
    end
    local t0 = clock()
    local q, qerr = model:embed(prompt)
    if not q then
      return nil, ("%s could not embed the request: %s"):format(model.name, qerr)
    end
    trace.played(req, model.name, "route", nil, (clock() - t0) * 1e3)
    local qn = norm(q)
    local best, nearest = {}, {}
    for _, e in ipairs(vectors) do
      local dot = 0
      local v = e.vector
      for i = 1, #q do
        dot = dot + q[i] * v[i]
      end
      local sim = (qn > 0 and e.norm > 0) and dot / (qn * e.norm) or 0
      if best[e.section] == nil or sim > best[e.section] then
        best[e.section] = sim
        nearest[e.section] = e.text
      end
    end
    local pick, score = nil, -math.huge
    for _, s in ipairs(sections) do
      if best[s] > score then
        pick, score = s, best[s]
      end
    end
    local scores = {}
    for s, v in pairs(best) do
      scores[s] = trace.round(v, 4)
    end
    local detail = {
      scores = scores,
      nearest = nearest[pick],
      model = model.name,
      similarity = trace.round(score, 4),
    }
    if self.threshold and score < self.threshold then
      detail.why = ("nearest example %q is only %.3f similar (threshold %.3f)"):format(
        nearest[pick],
        score,
        self.threshold
      )
      return nil, detail.why, detail
    end
    detail.section = pick
    detail.why = ("nearest example %q (%s, cosine %.3f)"):format(nearest[pick], pick, score)
    return detail
  end
  return m
end

local Router = {}
Router.__index = Router

local function check_section(band, section, where)
  if band and not band:has(section) then
    local known = {}
    for _, s in ipairs(band:sections()) do
      known[#known + 1] = "`" .. s .. "`"
    end
    error(
      ("%s: section `%s` has no instrument in the band (sections: %s)"):format(
        where,
        section,
        table.concat(known, ", ")
      ),
      3
    )
  end
end

--- A router from an ordered list of rules (see the module docs). Nothing else changes:
--- to make it the default of `route.pick` and `route.explain`, assign it,
--- `route.default = route.rules { ... }`.
---
--- Options: `band` — check now that every section a rule names has an instrument.
---@param rules table[]
---@param opts table|nil
---@return table router  with `:pick(req)` and `:explain(req)`
function route.rules(rules, opts)
  if type(rules) ~= "table" or #rules == 0 then
    error(
      '`route.rules` needs a list of rules: `route.rules { { when = route.keywords {...}, section = "code" }, { otherwise = "analysis" } }`',
      2
    )
  end
  opts = opts or {}
  local band = opts.band
  local compiled, named = {}, {}
  for i, r in ipairs(rules) do
    local where = ("`route.rules` rule %d"):format(i)
    if type(r) ~= "table" then
      error(("%s must be a table, got %s"):format(where, type(r)), 2)
    end
    for k in pairs(r) do
      if k ~= "when" and k ~= "section" and k ~= "otherwise" and k ~= "name" then
        error(
          ("%s has no field `%s`; a rule has `when` and `section`, or `otherwise`, and an optional `name`"):format(
            where,
            tostring(k)
          ),
          2
        )
      end
    end
    local rule = { index = i, name = r.name }
    if r.otherwise ~= nil then
      if r.when ~= nil or r.section ~= nil then
        error(('%s: `otherwise` stands alone (`{ otherwise = "analysis" }`)'):format(where), 2)
      end
      if type(r.otherwise) ~= "string" then
        error(("%s: `otherwise` must be a section name, got %s"):format(where, type(r.otherwise)), 2)
      end
      rule.kind = "otherwise"
      rule.section = r.otherwise
    else
      local when = r.when
      if type(when) == "function" then
        rule.kind = "predicate"
        rule.test = function(_, prompt, req)
          local result = when(prompt, req)
          if not result then
            return nil, "the function returned " .. tostring(result)
          end
          local section = type(result) == "string" and result or nil
          return { section = section, why = r.name and ("%q matched"):format(r.name) or "the function matched" }
        end
      elseif is_matcher(when) then
        rule.kind = when.kind
        rule.matcher = when
        rule.test = function(_, prompt, req)
          return when:test(prompt, req)
        end
      else
        error(
          ("%s needs `when = route.keywords {...}` (or `route.pattern`, `route.classifier`, `route.semantic`, a function), or `otherwise = ...`; got `when` = %s"):format(
            where,
            type(when)
          ),
          2
        )
      end
      if r.section ~= nil and type(r.section) ~= "string" then
        error(("%s: `section` must be a section name, got %s"):format(where, type(r.section)), 2)
      end
      if r.section == nil and not (is_matcher(when) and when.decides) and type(when) ~= "function" then
        error(
          ("%s: a %s rule needs `section = ...` (only classifier and semantic rules name the section themselves)"):format(
            where,
            rule.kind
          ),
          2
        )
      end
      rule.section = r.section
    end
    if rule.section then
      named[#named + 1] = { rule.section, where }
    elseif rule.matcher and rule.matcher.sections then
      for _, s in ipairs(rule.matcher.sections) do
        named[#named + 1] = { s, where }
      end
    end
    compiled[i] = rule
  end
  if band then
    for _, n in ipairs(named) do
      check_section(band, n[1], n[2])
    end
  end
  return setmetatable({ rules = compiled, band = band }, Router)
end

--- Runs the rules on a request without announcing anything: which rule decided, and
--- why (see `orchestra.Decision`).
---@param req table|string
---@return orchestra.Decision
function Router:explain(req)
  local prompt = prompt_of(req)
  local t0 = clock()
  local tried = {}
  local decision
  for _, rule in ipairs(self.rules) do
    if rule.kind == "otherwise" then
      decision = { section = rule.section, why = "no earlier rule matched" }
    else
      local hit, why, detail = rule.test(rule, prompt, type(req) == "table" and req or nil)
      if hit and (hit.section or rule.section) then
        decision = hit
        decision.section = rule.section or hit.section
      else
        local miss = { rule = rule.index, kind = rule.kind, name = rule.name, why = why }
        if type(detail) == "table" then
          miss.scores = detail.scores
          miss.nearest = detail.nearest
        end
        if hit and not (hit.section or rule.section) then
          miss.why = "the function matched but named no section"
        end
        tried[#tried + 1] = miss
      end
    end
    if decision then
      decision.rule = rule.index
      decision.kind = rule.kind
      decision.name = rule.name
      break
    end
  end
  decision = decision or { why = 'no rule matched; end the rules with `{ otherwise = "analysis" }`' }
  decision.tried = tried
  decision.us = trace.round((clock() - t0) * 1e6, 1)
  return decision
end

-- `pick` for both `router:pick` and `route.pick`; `level` points errors at the caller.
local function pick(router, req, level)
  local d
  if type(req) == "table" and type(req.section) == "string" and req.section ~= "" then
    -- The client asked for a section (`orchestra/<section>` over HTTP): no rule decides.
    d = { section = req.section, name = "asked by the client", kind = "client", why = "the client asked for this section" }
  else
    d = router:explain(req)
  end
  if not d.section then
    error(
      ('`route.pick`: no rule matched %q: end the rules with `{ otherwise = "analysis" }`'):format(
        trace.clip(prompt_of(req), 60)
      ),
      level + 1
    )
  end
  if type(req) == "table" then
    trace.of(req).route = d
    trace.emit(req, "routed", { section = d.section, rule = d.rule, kind = d.kind, why = d.why })
  else
    orchestra.emit("routed", { section = d.section, rule = d.rule, kind = d.kind, why = d.why })
  end
  return d.section, d
end

--- Decides the section of a request, announces it (`routed` on the event bus) and
--- records the decision in the request's trace. Raises when no rule matched.
---@param req table|string
---@return string section, orchestra.Decision decision
function Router:pick(req)
  local section, d = pick(self, req, 2) -- not a tail call: the error level counts this frame
  return section, d
end

local function default_router()
  local r = route.default
  if not r then
    error(
      "no default router: `route.rules` returns a router, so call `router:pick(req)` on it, or make it the default with `route.default = route.rules { ... }`",
      3
    )
  end
  return r
end

--- The router `route.pick` and `route.explain` use: nil until the score sets it
--- (`route.default = route.rules { ... }`).
---@type table|nil
route.default = nil

--- `router:pick(req)` on `route.default`.
---@param req table|string
---@return string section, orchestra.Decision decision
function route.pick(req)
  local section, d = pick(default_router(), req, 2)
  return section, d
end

--- `router:explain(req)` on `route.default`.
---@param req table|string
---@return orchestra.Decision
function route.explain(req)
  return default_router():explain(req)
end

return route
