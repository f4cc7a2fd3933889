-- The rehearsal band: four tiny synthetic models, one per section, written to the
-- orchestra cache on first use. Each replays a fixed line under greedy decoding, so
-- the answer shows who played. Runs offline: `orchestra rehearse "a prompt"`.
--
-- perform: the arrangement of `scores/default.lua` on the rehearsal band — route the
-- request to a section, the leads of the other sections comp, the section's lead takes
-- the solo, Mingus reviews it — with the trace and the narration of every step.
local route = require("orchestra.route")
local arrange = require("orchestra.arrange")

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

-- Words that send a request to a section; the first rule that matches wins, and
-- anything else goes to analysis.
local CODE_WORDS = { "function", "code", "bug", "compile", "rust", "python", "implement", "program", "test" }
local CREATIVE_WORDS = { "poem", "story", "haiku", "song", "lyrics", "imagine", "creative" }
local REVIEW_WORDS = { "review", "critique", "feedback", "check this" }

local router = route.rules({
  { name = "code words", when = route.keywords(CODE_WORDS), section = "code" },
  { name = "creative words", when = route.keywords(CREATIVE_WORDS), section = "creative" },
  { name = "review words", when = route.keywords(REVIEW_WORDS), section = "review" },
  { otherwise = "analysis" },
}, { band = band })

return {
  name = "rehearsal",
  band = band,
  router = router,

  -- The section a prompt goes to (without announcing it).
  pick = function(prompt)
    return router:explain(prompt).section
  end,

  perform = function(req)
    return arrange.perform(band, req, {
      router = router,
      comp = { max_tokens = 48 },
      review = { rounds = 1 },
    })
  end,
}
