-- get_team.lua - GET /api/teams/{random registered team}
-- (bench/status-app.sh). Env: TEAM_PREFIX, TEAM_COUNT, API_SECRET.
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local prefix = os.getenv("TEAM_PREFIX")
local teams = tonumber(os.getenv("TEAM_COUNT"))
local secret = os.getenv("API_SECRET")
if secret then wrk.headers["Authorization"] = "Bearer " .. secret end
local paths = {}

function init(args)
   for i = 0, teams - 1 do paths[i] = wrk.format("GET", "/api/teams/" .. prefix .. "-" .. i) end
end

function request()
   return paths[math.random(0, teams - 1)]
end
