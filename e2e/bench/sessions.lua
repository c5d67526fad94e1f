-- wrk script: every request carries one of the established sessions' cookies
-- (one "name=value" a line in the file named after --), picked at random, or
-- its session header (a line "Name: value").
local cookies = {}

init = function(args)
  for line in io.lines(args[1]) do
    cookies[#cookies + 1] = line
  end
end

request = function()
  local headers = {}
  if #cookies > 0 then
    local line = cookies[math.random(#cookies)]
    local name, value = line:match("^([%w-]+): (.*)$")
    if name then
      headers[name] = value
    else
      headers["Cookie"] = line
    end
  end
  return wrk.format("GET", "/", headers)
end
