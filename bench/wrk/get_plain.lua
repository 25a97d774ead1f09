-- get_plain.lua - GET of the URL given to wrk, with the bearer secret when
-- API_SECRET is set (bench/status-app.sh).
dofile(os.getenv("WRK_DIR") .. "/report.lua")
local secret = os.getenv("API_SECRET")
if secret then wrk.headers["Authorization"] = "Bearer " .. secret end
