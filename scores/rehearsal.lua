-- The rehearsal band: four tiny synthetic models, one per section, written to the
-- orchestra cache on first use. Each replays a fixed line under greedy decoding, so
-- the answer shows who played. Runs offline: `orchestra rehearse "a prompt"`.
--
-- perform: pick a section by keywords; the section's lead solos, streaming its answer.
local text = require("orchestra.text")

local band = orchestra.band { memory = "2GiB", idle_unload = "10m" }

for _, member in ipairs(orchestra.rehearsal_band()) do
  band:add(member.name, {
    model = orchestra.rehearsal_model(member.name),
    section = member.section,
    context = 512,
    slots = 2,
    max_tokens = 128,
    sampling = { temperature = 0 }, -- greedy: each member replays its script
  })
end

-- Words that send a request to a section; the most matches wins, ties go to the
-- section listed first, and nothing at all goes to analysis.
local routes = {
  { section = "code", words = { "function", "code", "bug", "compile", "rust", "python", "implement", "program", "test" } },
  { section = "creative", words = { "poem", "story", "haiku", "song", "lyrics", "imagine", "creative" } },
  { section = "review", words = { "review", "critique", "feedback", "check this" } },
  { section = "analysis", words = { "why", "explain", "analyse", "analyze", "compare", "complexity" } },
}

local function pick(prompt)
  local best, best_hits = "analysis", 0
  for _, route in ipairs(routes) do
    local hits = text.count_any(prompt, route.words)
    if hits > best_hits then
      best, best_hits = route.section, hits
    end
  end
  return best
end

return {
  name = "rehearsal",
  band = band,
  pick = pick,

  perform = function(req)
    local section = pick(req.prompt)
    local soloist = band:lead(section)
    orchestra.emit("routed", { section = section, soloist = soloist.name })
    local answer, err = soloist:stream(req, function(piece)
      req:write(piece)
    end)
    if not answer then
      error(err, 0)
    end
    return answer
  end,
}
