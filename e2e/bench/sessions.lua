-- wrk script: every request carries one of the established sessions' cookies
-- (one "name=value" a line in the file named after --), picked at random.
local cookies = {}

init = function(args)
  for line in io.lines(args[1]) do
    cookies[#cookies + 1] = line
  end
end

request = function()
  local headers = {}
  if #cookies > 0 then
    headers["Cookie"] = cookies[math.random(#cookies)]
  end
  return wrk.format("GET", "/", headers)
end
