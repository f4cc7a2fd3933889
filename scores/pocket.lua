-- The pocket band: small real models that fit a laptop (about 2 GB of files, under
-- 4 GiB resident with every member loaded), in four families, playing the default
-- arrangement: route, comp, solo, review. Agents (OpenClaw, the openai-agents SDK) get
-- the soloist alone, with a 32k context: their prompts run to 12-17k tokens.
--
--   orchestra pull scores/pocket.lua                      # download the models once
--   orchestra play scores/pocket.lua "write a python function that reverses a list"
--
-- To try another file without editing this score, point an instrument at it:
--   orchestra play scores/pocket.lua --model-file coltrane=~/models/other.gguf "..."
local route = require("orchestra.route")
local arrange = require("orchestra.arrange")

local band = orchestra.band({
  memory = "4GiB",
  idle_unload = "10m",
  sections = { "code", "creative", "analysis", "review", "routing" },
})

-- code — Coltrane: Qwen2.5-Coder 0.5B Instruct.
band:add("coltrane", {
  model = "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
  section = "code",
  -- An agent's conversation in one slot; the KV cache as q8_0 (about half of f16).
  context = 32768,
  slots = 1,
  kv_cache = "q8_0",
  max_tokens = 384,
  sampling = { temperature = 0.2, top_p = 0.9 },
})

-- analysis — Monk: Qwen2.5 0.5B Instruct, a general model of the same size.
band:add("monk", {
  model = "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
  section = "analysis",
  -- An agent's conversation in one slot; the KV cache as q8_0 (about half of f16).
  context = 32768,
  slots = 1,
  kv_cache = "q8_0",
  max_tokens = 384,
  sampling = { temperature = 0.4 },
})

-- creative — Ella: Llama 3.2 1B Instruct, another family for another voice.
band:add("ella", {
  model = "hf:bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf",
  section = "creative",
  -- An agent's conversation in one slot; the KV cache as q8_0 (about half of f16).
  context = 32768,
  slots = 1,
  kv_cache = "q8_0",
  max_tokens = 384,
  sampling = { temperature = 0.9, top_p = 0.95 },
})

-- review — Mingus: Gemma 3 270M Instruct, a family none of the soloists belongs to. The
-- verdict grammar keeps even a model this small to approve-or-list-problems JSON.
band:add("mingus", {
  model = "hf:bartowski/google_gemma-3-270m-it-GGUF/google_gemma-3-270m-it-Q4_K_M.gguf",
  section = "review",
  context = 2048,
  slots = 2,
  max_tokens = 192,
  sampling = { temperature = 0 },
})

-- routing — Duke hears what a request is about (sentence embeddings, all-MiniLM-L6-v2).
band:add("duke", {
  model = "hf:second-state/All-MiniLM-L6-v2-Embedding-GGUF/all-MiniLM-L6-v2-Q8_0.gguf",
  section = "routing",
  embeddings = true,
  context = 512,
  slots = 4,
})

-- Example requests per section: a request goes to the section of the nearest one.
local examples = {
  code = {
    "fix this stack trace",
    "write a function that reverses a string",
    "why does this code not compile",
    "how do I use async and await",
    "write a shell script that backs up a directory",
    "implement quicksort",
  },
  creative = {
    "write a poem about the rain",
    "tell me a story about a knight",
    "write lyrics for a jazz ballad",
    "invent a character for my novel",
    "brainstorm a catchy name for my band",
  },
  analysis = {
    "compare two options and recommend one",
    "explain the causes of climate change",
    "what are the advantages and disadvantages of remote work",
    "summarize this article",
    "explain how vaccines work",
  },
}

local CODE_WORDS = { "function", "compile", "stack trace", "bug", "regex", "python", "rust", "javascript", "sql" }
local CREATIVE_WORDS = { "poem", "haiku", "lyrics", "limerick", "short story", "sonnet" }

local router = route.rules({
  { name = "code words", when = route.keywords(CODE_WORDS), section = "code" },
  { name = "creative words", when = route.keywords(CREATIVE_WORDS), section = "creative" },
  { name = "like the examples", when = route.semantic(band.duke, examples, { threshold = 0.25 }) },
  { otherwise = "analysis" },
}, { band = band })

return {
  name = "pocket",
  band = band,
  router = router,
  examples = examples,

  -- The standard arrangement: the leads of the other sections comp a few notes, the
  -- section's lead solos, Mingus reviews (one revision at most: small models ramble).
  perform = function(req)
    return arrange.perform(band, req, {
      router = router,
      comp = { max_tokens = 64 },
      review = { rounds = 1, max_tokens = 160 },
      -- Measured with `orchestra eval` on HumanEval (docs/eval.md, scripts/eval-pocket
      -- --every 2): comping and Mingus's review passed 49 of 82 problems against 50 for
      -- Coltrane alone, at 2.0x his median time. Until an arrangement earns its time on
      -- code, Coltrane plays code alone.
      sections = {
        code = {
          comp = false,
          review = false,
          why = "on HumanEval the band passed 49/82 against Coltrane's 50/82 alone, at 2x the time",
        },
      },
    })
  end,
}
