-- submit_update.lua - POST /commands/submit-update for a random registered
-- team (bench/status-app.sh). Env: TEAM_PREFIX, TEAM_COUNT, API_SECRET.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local prefix = os.getenv("TEAM_PREFIX")
local teams = tonumber(os.getenv("TEAM_COUNT"))
local secret = os.getenv("API_SECRET")
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if secret then wrk.headers["Authorization"] = "Bearer " .. secret end

function request()
   n = n + 1
   local body = string.format(
      '{"team_id":"%s-%d","content":"Yesterday: shipped item %d. Today: reviewing pull requests and fixing a flaky test. Blockers: none.","author":"user-%d","slack_user":"U%08d"}',
      prefix, math.random(0, teams - 1), n, math.random(1, 50), math.random(1, 99999999))
   return wrk.format(nil, nil, nil, body)
end
