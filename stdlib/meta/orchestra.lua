---@meta
-- LuaLS definitions of what the runtime gives scores (not a module: editors read it).
-- Point your editor at it: `"workspace.library": ["<orchestra>/stdlib"]` in .luarc.json.

---@class orchestra
---@field version string
---@field sandbox "shared"|"trusted"
---@field sections string[] The standard sections: code, creative, analysis, review.
---@field score { name: string, dir: string } The running score.
---@field Model table Extension methods found on every `Model` (`function orchestra.Model:solo(...)`).
---@field Band table Extension methods found on every `Band`.
---@field json { encode: fun(v: any, opts?: { pretty?: boolean }): string, decode: fun(s: string): any, string? }
---@field log orchestra.Log
---@field offstage table<string, boolean> Sections whose instruments route and never play (default `{ routing = true }`); `orchestra.offstage.tuning = true` adds one.
orchestra = {}

--- Reports an old form once per score load: a warning while playing and a note of
--- `orchestra check`, at the score's line. For libraries of scores that rename things.
---@param what string The old form, e.g. "`mylib.play(req, band)`".
---@param instead string What to write, e.g. "write `mylib.play(band, req)`".
function orchestra.deprecated(what, instead) end

---@class orchestra.Log
---@overload fun(...: any) Logs at info level.
---@field debug fun(...: any)
---@field info fun(...: any)
---@field warn fun(...: any)
---@field error fun(...: any)

---@class orchestra.BandOptions
---@field memory? string|integer Memory budget of all resident models ("12GiB").
---@field idle_unload? string|number Unload a model idle this long ("10m").
---@field wait_for_room? string|number How long a load waits for playing models ("2m").
---@field sections? string[] The band's sections (default: orchestra.sections).

--- Declares a band on a memory-budgeted stage.
---@param opts? orchestra.BandOptions
---@return Band
function orchestra.band(opts) end

---@class SamplingFields
---@field temperature? number 0 (or less) is greedy.
---@field top_k? integer 0 disables.
---@field top_p? number 1 disables.
---@field min_p? number 0 disables.
---@field repeat_penalty? number 1 disables.
---@field repeat_last_n? integer
---@field frequency_penalty? number
---@field presence_penalty? number
---@field seed? integer
---@field grammar? string GBNF, start rule `root`.
---@field greedy? boolean Shorthand for temperature = 0.

--- A sampling value (tables work wherever one is accepted).
---@param fields SamplingFields
---@return Sampling
function orchestra.sampling(fields) end

--- Publishes an event on the bus (stage page, metrics, narration).
---@param name string
---@param data? table|string|number|boolean
function orchestra.emit(name, data) end

--- A narration line (an event named `narration`).
---@param ... any
function orchestra.narrate(...) end

--- Runs the functions as concurrent coroutines; results keep the input's keys. The
--- second value holds the `err` of functions that returned `nil, err`.
---@param fns table<any, fun(): any>
---@return table results, table|nil errors
function orchestra.together(fns) end

--- Waits without using the request's CPU budget.
---@param seconds number
function orchestra.sleep(seconds) end

--- Seconds since the process started (monotonic).
---@return number
function orchestra.clock() end

--- A value pretty-printed like the REPL does.
---@param v any
---@return string
function orchestra.inspect(v) end

--- The file of a rehearsal band member ("coltrane", "ella", "monk", "mingus").
---@param name string
---@return string path
function orchestra.rehearsal_model(name) end

---@return { name: string, section: string, script: string }[]
function orchestra.rehearsal_band() end

---@class Sampling: SamplingFields
local Sampling = {}
---@param changes SamplingFields
---@return Sampling
function Sampling:with(changes) end
---@return SamplingFields
function Sampling:table() end

---@class InstrumentSpec
---@field model string A GGUF path (relative to the score) or "hf:ORG/REPO/FILE.gguf"; with `url`, the model id the server serves.
---@field section string
---@field context? integer Tokens per request.
---@field slots? integer Requests decoded together.
---@field batch? integer
---@field threads? integer
---@field gpu_layers? integer
---@field kv_cache? "f16"|"q8_0" How the KV cache stores keys and values: q8_0 takes about half the memory of f16 (the default).
---@field embeddings? boolean Load for `embed` instead of generation.
---@field prompt_cache? false|PromptCache Prefix snapshots of long prompts (default: on, 2048 tokens, 512MiB RAM, 8GiB disk); `false` turns them off.
---@field sampling? SamplingFields|Sampling Default sampling.
---@field max_tokens? integer Default answer length.
---@field system? string Default system prompt.
---@field pinned? boolean Never evicted.
---@field template? string Chat template instead of the GGUF's: Jinja text, `"file:x.jinja"` or a file path (relative to the score).
---@field url? string A remote instrument: the API base of an OpenAI-compatible server, "http://host:8080/v1".
---@field api_key_env? string Remote: the environment variable holding its API key (sent as a Bearer token).
---@field timeout? string|number Remote: longest wait for the answer to start and between pieces (default "60s").
---@field connect_timeout? string|number Remote: time to open the connection (default "5s").
---@field retries? integer Remote: attempts after the first, before any text arrived (default 2; backoff 250 ms, doubling).

---@class PromptCache
---@field min_tokens? integer Prompts shorter than this are never snapshotted (default 2048).
---@field ram? string|integer Host memory for this model's snapshots (default "512MiB"; 0: none).
---@field disk? string|integer Size limit of the snapshot folder, `$ORCHESTRA_HOME/cache/prefix` (default "8GiB"; 0: no files).

--- Who to leave out: a model, an instrument's name or a section's name, or a list of
--- them (`{ soloist, "review" }`).
---@alias Except Model|string|(Model|string)[]

---@class Band
---@field stage Stage
---@field budget integer
---@field [string] Model Instruments by name (`band.coltrane`).
local Band = {}
---@param name string
---@param spec InstrumentSpec
---@return Model
function Band:add(name, spec) end
--- The first instrument of a section that plays (see `Model.plays`); raises when none does.
---@param section string
---@return Model
function Band:lead(section) end
--- The instruments that play, in band order: `band:players { section = "code", except = soloist }`.
--- The one rule of who leads, comps, solos and reviews; router and embedding models never do.
---@param opts? { section?: string, except?: Except }
---@return Model[]
function Band:players(opts) end
---@param section string
---@return Model[]
function Band:section(section) end
---@return string[]
function Band:sections() end
--- Whether a section has an instrument, or an instrument has this name.
---@param what string
---@return boolean
function Band:has(what) end
---@return Model[]
function Band:members() end
--- Every member but `except` (players or not).
---@param except Except
---@return Model[]
function Band:others(except) end
--- A reviewer that plays: the `review` section's (or `section`'s) first instrument not
--- left out, else any other player; nil when nobody is left. `band:reviewer(soloist)`
--- leaves the soloist out; `band:reviewer { except = ..., section = ... }` says more.
--- (`{ ["not"] = ... }`, the old spelling of `except`, still works and warns once.)
---@param except_or_opts? Except|{ except?: Except, section?: string }
---@return Model|nil
function Band:reviewer(except_or_opts) end
---@param fns table<any, fun(): any>
---@return table results, table|nil errors
function Band:together(fns) end
---@return table
function Band:info() end

---@class GenerateOptions: SamplingFields
---@field max_tokens? integer
---@field stop? string|string[]
---@field system? string|false
---@field sampling? SamplingFields|Sampling
---@field on_token? fun(piece: string): boolean|nil Return false to stop.
---@field raw? boolean The prompt string is sent as is (no chat template).
---@field ignore_eos? boolean
---@field tools? Tool[] Functions the model may call (also accepted in the prompt table).
---@field tool_choice? "auto"|"none"|"required"|{ name: string }

--- A function a model may call; `parameters` is a JSON schema.
---@class Tool
---@field name string
---@field description? string
---@field parameters? table

--- A call the model made. `arguments` is JSON text, `args` the same as a table.
---@class ToolCall
---@field id string `call_...`
---@field name string
---@field arguments string
---@field args table

---@class Message
---@field role string "system"|"user"|"assistant"|"tool"
---@field content string
---@field tool_calls? ToolCall[] On an assistant message: the calls it made.
---@field tool_call_id? string On a `tool` message: the call it answers.
---@field name? string On a `tool` message: the tool's name.

---@class GenerateDetails
---@field model string
---@field finish_reason "stop"|"stop_string"|"length"|"cancelled"|"tool_calls"
---@field tool_calls? ToolCall[] The calls the model made (then `text` is only the rest).
---@field prompt_tokens? integer
---@field completion_tokens integer
---@field timings? { ttft_ms: number, decode_tok_s: number, prompt_tok_s: number, total_ms: number, queued_ms: number, gap_mean_ms: number, gap_std_ms: number }

---@alias Prompt string|Request|{ role: string, content: string }[]|{ raw: string }

---@class Model
---@field name string
---@field section string
---@field model string The reference as written.
---@field path string
---@field embeddings boolean Loaded for `embed`.
---@field plays boolean Whether it may lead, comp, solo or review: false for embedding models and offstage (router) sections.
---@field sampling Sampling Its default sampling.
---@field remote string|nil The server's URL of a remote instrument.
local Model = {}
---@return boolean|nil ok, string? err
function Model:load() end
---@return boolean|nil was_loaded, string? err
function Model:unload() end
---@return table
function Model:info() end
---@param prompt Prompt
---@param opts? GenerateOptions
---@return string|nil text, GenerateDetails|string details_or_err
function Model:generate(prompt, opts) end
---@param prompt Prompt
---@param opts_or_fn GenerateOptions|fun(piece: string): boolean|nil
---@param fn? fun(piece: string): boolean|nil
---@return string|nil text, GenerateDetails|string details_or_err
function Model:stream(prompt, opts_or_fn, fn) end
--- With tools, the calls come in the details:
--- ```lua
--- local text, d = model:chat{ messages = req.messages, tools = {
---   { name = "get_weather", parameters = { type = "object", properties = { city = { type = "string" } } } },
--- } }
--- if d.tool_calls then print(d.tool_calls[1].name, d.tool_calls[1].args.city) end
--- ```
---@param messages Message[]|Request|{ messages: Message[], tools?: Tool[], tool_choice?: string|table }
---@param opts? GenerateOptions
---@return string|nil text, GenerateDetails|string details_or_err
function Model:chat(messages, opts) end
---@param text string
---@param opts? { bos?: boolean }
---@return integer[]|nil tokens, string? err
function Model:tokenize(text, opts) end
---@param tokens integer[]
---@return string|nil text, string? err
function Model:detokenize(tokens) end
---@param input string|string[]
---@return number[]|number[][]|nil vectors, string? err
function Model:embed(input) end

---@class Stage
local Stage = {}
---@return integer
function Stage:budget() end
---@return integer
function Stage:used() end
---@return { name: string, footprint: integer, footprint_human: string, pinned: boolean, playing: integer, idle_ms: integer }[]
function Stage:resident() end
---@param who Model|string
---@return boolean
function Stage:is_resident(who) end
---@param who Model|string
---@param pinned? boolean
function Stage:pin(who, pinned) end
---@param who Model|string
---@return boolean|nil was_loaded, string? err
function Stage:evict(who) end
---@return string[]
function Stage:names() end

---@class Request
---@field id integer
---@field prompt string The last user message.
---@field messages Message[]
---@field tools? Tool[] The client's tools (`arrange.solo` passes them to the soloist only).
---@field tool_choice? "auto"|"none"|"required"|{ name: string }
---@field model? string What the client asked for.
---@field max_tokens? integer
---@field temperature? number
---@field stream boolean
local Request = {}
--- Streams text to the client.
---@param ... string
function Request:write(...) end

---@class Score
---@field perform fun(req: Request): string|table|nil
