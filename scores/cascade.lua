-- A cascade: the smallest model answers first; Mingus reviews; when he asks for a
-- revision, the next larger model takes over. Most requests never wake the big one.
--
--   orchestra pull scores/cascade.lua
--   orchestra play --trace scores/cascade.lua "what is the capital of Australia?"
local arrange = require("orchestra.arrange")

local band = orchestra.band({ memory = "10GiB", idle_unload = "10m" })

-- Smallest first: Chet Baker (Qwen2.5 0.5B), Miles (Llama 3.2 3B), Ella (Mistral 7B).
band:add("chet", {
  model = "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
  section = "analysis",
  context = 4096,
  sampling = { temperature = 0.3 },
})
band:add("miles", {
  model = "hf:bartowski/Llama-3.2-3B-Instruct-GGUF/Llama-3.2-3B-Instruct-Q4_K_M.gguf",
  section = "analysis",
  context = 4096,
  sampling = { temperature = 0.3 },
})
band:add("ella", {
  model = "hf:bartowski/Mistral-7B-Instruct-v0.3-GGUF/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf",
  section = "analysis",
  context = 4096,
  sampling = { temperature = 0.3 },
})

-- The judge of every step: Gemma 2 2B, another family.
band:add("mingus", {
  model = "hf:bartowski/gemma-2-2b-it-GGUF/gemma-2-2b-it-Q4_K_M.gguf",
  section = "review",
  context = 4096,
  sampling = { temperature = 0 },
})

return {
  name = "cascade",
  band = band,

  perform = function(req)
    local draft = assert(arrange.cascade(band, { band.chet, band.miles, band.ella }, req, { reviewer = band.mingus }))
    return arrange.answer(req, draft)
  end,
}
