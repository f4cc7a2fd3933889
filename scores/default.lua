-- The default band: four sections — code, creative, analysis, review — of popular small
-- models from Hugging Face, and two router models offstage.
--
--   orchestra pull scores/default.lua                      # download the models once
--   orchestra play scores/default.lua "why is the sky blue?"
--
-- Each request is routed to a section (keywords, then meaning, then a small classifier),
-- the leads of the other sections comp (short notes), the section's lead takes the solo,
-- and a reviewer from another model family checks it. To swap a model, change its
-- `model =` line: routing names sections, never models.
local route = require("orchestra.route")
local arrange = require("orchestra.arrange")

local band = orchestra.band({
  -- Above the sum of the footprints, nothing is ever unloaded; below it, the stage
  -- swaps idle models out (least recently used first).
  memory = "16GiB",
  idle_unload = "10m",
  -- `routing` holds the router models: they listen, they never play.
  sections = { "code", "creative", "analysis", "review", "routing" },
})

-- code — John Coltrane: fast, precise, endless practice. Qwen2.5-Coder 1.5B.
band:add("coltrane", {
  model = "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
  section = "code",
  -- Room for an agent's conversation (OpenClaw's prompt alone is ~12k tokens); the
  -- KV cache as q8_0 keeps 32k tokens in about half the memory of f16.
  context = 32768,
  slots = 1,
  kv_cache = "q8_0",
  sampling = { temperature = 0.2, top_p = 0.9 },
})

-- creative — Ella Fitzgerald: melody and invention. Mistral 7B Instruct v0.3.
band:add("ella", {
  model = "hf:bartowski/Mistral-7B-Instruct-v0.3-GGUF/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf",
  section = "creative",
  -- Room for an agent's conversation (OpenClaw's prompt alone is ~12k tokens); the
  -- KV cache as q8_0 keeps 32k tokens in about half the memory of f16.
  context = 32768,
  slots = 1,
  kv_cache = "q8_0",
  sampling = { temperature = 0.9, top_p = 0.95 },
})

-- analysis — Thelonious Monk: takes a problem apart. Llama 3.2 3B Instruct.
band:add("monk", {
  model = "hf:bartowski/Llama-3.2-3B-Instruct-GGUF/Llama-3.2-3B-Instruct-Q4_K_M.gguf",
  section = "analysis",
  -- Room for an agent's conversation (OpenClaw's prompt alone is ~12k tokens); the
  -- KV cache as q8_0 keeps 32k tokens in about half the memory of f16.
  context = 32768,
  slots = 1,
  kv_cache = "q8_0",
  sampling = { temperature = 0.4 },
})

-- review — Charles Mingus: nobody slips past him. Gemma 2 2B, a different family from
-- every soloist, so it does not share their blind spots.
band:add("mingus", {
  model = "hf:bartowski/gemma-2-2b-it-GGUF/gemma-2-2b-it-Q4_K_M.gguf",
  section = "review",
  context = 4096,
  slots = 2,
  sampling = { temperature = 0 },
})

-- routing — Count Basie points at who plays next (a classifier, Qwen2.5 0.5B); Duke
-- Ellington hears what a request is about (sentence embeddings, all-MiniLM-L6-v2).
band:add("basie", {
  model = "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf",
  section = "routing",
  context = 1024,
  slots = 2,
})
band:add("duke", {
  model = "hf:second-state/All-MiniLM-L6-v2-Embedding-GGUF/all-MiniLM-L6-v2-Q8_0.gguf",
  section = "routing",
  embeddings = true,
  context = 512,
  slots = 4,
})

-- Example requests per section: a new request goes to the section of the nearest one
-- (by meaning, not words). Add your own; the router's test checks they still route a
-- labelled set of requests to the right sections.
local examples = {
  code = {
    "fix this stack trace",
    "write a function that reverses a string",
    "why does this code not compile",
    "debug a segmentation fault",
    "how do I use async and await",
    "optimize this slow loop",
    "write a regular expression that matches email addresses",
    "set up a REST API endpoint",
    "write a shell script that backs up a directory",
    "resolve a git merge conflict",
    "my program crashes with a null pointer exception",
    "implement quicksort",
  },
  creative = {
    "write a poem about the rain",
    "tell me a story about a knight",
    "write lyrics for a jazz ballad",
    "describe a magical forest",
    "invent a character for my novel",
    "write a funny poem",
    "a short story for children",
    "write a scene for a screenplay",
    "brainstorm a catchy name for my band",
    "write a greeting card message",
  },
  analysis = {
    "compare two options and recommend one",
    "explain the causes of climate change",
    "what are the advantages and disadvantages of remote work",
    "summarize this article",
    "analyze the market trends",
    "why did this historical event happen",
    "explain how vaccines work",
    "evaluate this business plan",
    "what does this data tell us",
    "give me the key points of this report",
  },
}

-- Words that settle it at once (whole words, any case).
local CODE_WORDS = { "function", "compile", "stack trace", "bug", "regex", "python", "rust", "javascript", "sql" }
local CREATIVE_WORDS = { "poem", "haiku", "lyrics", "limerick", "short story", "sonnet" }

-- The routing rules: the first that matches decides.
local router = route.rules({
  { name = "code words", when = route.keywords(CODE_WORDS), section = "code" },
  {
    name = "a code block",
    when = route.pattern("```", "%f[%w]def%s+[%w_]+%(", "%f[%w]fn%s+[%w_]+%("),
    section = "code",
  },
  { name = "creative words", when = route.keywords(CREATIVE_WORDS), section = "creative" },
  -- Below 0.25 cosine the nearest example is not near at all: let Basie decide.
  { name = "like the examples", when = route.semantic(band.duke, examples, { threshold = 0.25 }) },
  { name = "ask Basie", when = route.classifier(band.basie) },
  { otherwise = "analysis" },
}, { band = band })

return {
  name = "default",
  band = band,
  router = router,
  examples = examples,

  -- The standard arrangement (`arrange.perform`): the router picks the section; the
  -- leads of the other sections comp, a few notes each, all at once; the section's lead
  -- answers with the notes in front of it (if it cannot play, the next instrument of its
  -- section steps in); Mingus (or, for his own solos, someone else) reviews, up to two
  -- revisions, and the last one is reviewed too.
  perform = function(req)
    return arrange.perform(band, req, {
      router = router,
      comp = { max_tokens = 96 },
      review = { rounds = 2 },
    })
  end,
}
