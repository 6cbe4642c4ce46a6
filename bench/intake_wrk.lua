-- wrk script for bench/intake_load.py: signed Facebook deliveries, each body sent once.
--
--   wrk -t1 -c32 -d15s -s bench/intake_wrk.lua http://127.0.0.1:8080/webhooks/facebook \
--       -- /tmp/bodies.txt 1 [first line, from 0]
--
-- Lua in wrk has no HMAC: the file (made by intake_load.py) holds one request a line, the
-- X-Hub-Signature-256 value, a space, then the JSON body. With N threads, thread k sends the
-- lines k, k+N, k+2N… from the first line on, so no two requests carry the same body (the
-- server dedupes a body it has seen, which would make a repeat cheaper; a later run starts
-- after the lines an earlier one sent). A thread that runs out starts again, and done()
-- says so.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads, first = args[1], tonumber(args[2] or "1"), tonumber(args[3] or "0")
  items = {}
  local i = 0
  for line in io.lines(path) do
    if i >= first and (i - first) % nthreads == id then
      local space = line:find(" ", 1, true)
      items[#items + 1] = { line:sub(1, space - 1), line:sub(space + 1) }
    end
    i = i + 1
  end
  count = #items
  sent = 0
end

function request()
  sent = sent + 1
  local item = items[(sent - 1) % count + 1]
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = item[1],
  }, item[2])
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, thread in ipairs(threads) do
    if thread:get("sent") > thread:get("count") then
      wrapped = wrapped + 1
    end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d "
      .. "p50_us=%d p99_us=%d wrapped_threads=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), wrapped
  ))
end
