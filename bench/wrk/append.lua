-- append.lua - wrk script: POST one event per request to chronicle.
-- Every request carries a unique UUID-shaped id built from a per-run random
-- prefix, the wrk thread number and a per-thread counter, so no append is an
-- idempotent replay. Each thread spreads its appends over 64 streams
-- (bench-<thread>-<0..63>); data is about 200 bytes of JSON.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

math.randomseed(os.time())
local run_prefix = math.random(0, 0x7fffffff)
local threads = 0

-- Runs in wrk's main Lua state, once per thread, before the threads start.
function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
   thread:set("run", run_prefix)
end

local counter = 0
local padding = string.rep("x", 150)
local headers = { ["Content-Type"] = "application/json" }

function request()
   counter = counter + 1
   local id = string.format("%08x-%04x-7000-8000-%012x", run, tid, counter)
   local stream = string.format("bench-%d-%d", tid, counter % 64)
   local body = string.format(
      '{"events":[{"id":"%s","type":"BenchEvent","data":{"seq":%d,"thread":%d,"note":"wrk append","padding":"%s"}}]}',
      id, counter, tid, padding)
   return wrk.format("POST", "/v1/streams/" .. stream, headers, body)
end
