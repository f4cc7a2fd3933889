-- A jam session: every section answers the request at the same time, then Monk leads
-- and merges the answers into one (mixture of agents). Slower than a solo, often
-- better on open questions.
--
--   orchestra pull scores/jam.lua
--   orchestra play --trace --narrate scores/jam.lua "how should a small team start with testing?"
local arrange = require("orchestra.arrange")

local band = orchestra.band({ memory = "14GiB", idle_unload = "10m" })

band:add("coltrane", {
  model = "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
  section = "code",
  context = 4096,
  sampling = { temperature = 0.3 },
})
band:add("ella", {
  model = "hf:bartowski/Mistral-7B-Instruct-v0.3-GGUF/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf",
  section = "creative",
  context = 4096,
  sampling = { temperature = 0.8 },
})
band:add("monk", {
  model = "hf:bartowski/Llama-3.2-3B-Instruct-GGUF/Llama-3.2-3B-Instruct-Q4_K_M.gguf",
  section = "analysis",
  context = 8192, -- the leader reads everyone's answer
  sampling = { temperature = 0.4 },
})

return {
  name = "jam",
  band = band,

  perform = function(req)
    -- One player per section (by default every section but review), each with at most
    -- 384 tokens; the analysis lead merges.
    local draft = assert(arrange.jam(band, req, { leader = "analysis", max_tokens = 384 }))
    return arrange.answer(req, draft)
  end,
}
