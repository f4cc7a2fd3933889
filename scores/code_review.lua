-- Code with a review chain: Coltrane writes the code, Monk comps with pitfalls and edge
-- cases first, and Mingus — a model of another family — reviews the result and sends it
-- back until he approves (at most three revisions).
--
--   orchestra pull scores/code_review.lua
--   orchestra play --trace scores/code_review.lua "write a function that parses ISO dates"
local arrange = require("orchestra.arrange")

local band = orchestra.band({ memory = "8GiB", idle_unload = "10m" })

-- The coder: Qwen2.5-Coder 1.5B, precise at low temperature.
band:add("coltrane", {
  model = "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
  section = "code",
  context = 4096,
  sampling = { temperature = 0.2, top_p = 0.9 },
})

-- The one who thinks about what can go wrong: Llama 3.2 3B.
band:add("monk", {
  model = "hf:bartowski/Llama-3.2-3B-Instruct-GGUF/Llama-3.2-3B-Instruct-Q4_K_M.gguf",
  section = "analysis",
  context = 4096,
  sampling = { temperature = 0.3 },
})

-- The reviewer: Gemma 2 2B, so its blind spots are not Coltrane's.
band:add("mingus", {
  model = "hf:bartowski/gemma-2-2b-it-GGUF/gemma-2-2b-it-Q4_K_M.gguf",
  section = "review",
  context = 4096,
  sampling = { temperature = 0 },
})

-- What Monk is asked to comp with (`%s` his name and section, `%d` a word budget).
local PITFALLS = "You are %s (%s). A colleague is about to write code for the request below. "
  .. "Do not write the code. In at most %d words, list the edge cases, pitfalls and tests "
  .. "it must get right."

return {
  name = "code_review",
  band = band,

  -- The standard arrangement without routing: always the code section, Monk comps
  -- with pitfalls, Mingus reviews every take.
  perform = function(req)
    return arrange.perform(band, req, {
      section = "code",
      comp = { players = { band.monk }, max_tokens = 128, prompt = PITFALLS },
      review = { reviewer = band.mingus, rounds = 3 },
    })
  end,
}
