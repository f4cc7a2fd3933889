-- A small score to copy: the code section's lead answers, and the review section's
-- lead (never the same model) checks the answer once. Runs on the rehearsal band:
--
--   orchestra play examples/lua/second_opinion.lua --trace --narrate "fix my loop"
local arrange = require("orchestra.arrange")

local band = orchestra.band { memory = "1GiB" }
for _, m in ipairs(orchestra.rehearsal_band()) do
  band:add(m.name, {
    model = orchestra.rehearsal_model(m.name),
    section = m.section,
    context = 512,
    sampling = { temperature = 0 },
  })
end

return {
  perform = function(req)
    local soloist = band:lead("code")
    local draft = assert(arrange.solo(band, soloist, req))
    draft = arrange.review(band:reviewer(soloist), draft, { rounds = 1 })
    return arrange.answer(req, draft)
  end,
}
