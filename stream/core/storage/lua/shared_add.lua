-- Add a batch's increments to the shared statistics of one shard, once per input offset.
-- Every key of a call shares the shard's hash tag {s:NN} (one Redis Cluster slot); KEYS[1] is the shard's
-- guard, a hash: input partition -> the newest offset whose increments this shard holds. An increment is
-- added only if its event's offset is newer than the guard's, so a batch redelivered after a crash (or
-- written twice by a worker that lost its partition) adds nothing twice.
-- KEYS: guard (also counts the trims of its shard: field "trimmed"), data keys (sorted sets)
-- ARGV: sections, then per section: partition ("" = none: no guard, as in a backtest), lo (the oldest offset
--       among its increments), hi_inc (the newest among them), hi_batch (the newest offset of the batch in
--       that partition), n, then n triples (data key index into KEYS, member, amount);
--       then cap (a sorted set in mode "t" is trimmed to its `cap` best when it holds more than 2 x cap),
--       ttl_ms (mode "e": expire ttl_ms after the first write), then a mode per data key ("t", "e" or "-")
-- Returns: {partition, guard, ...} for the sections refused because the guard lies inside their range:
--          the caller drops the increments at or below that guard and calls again.
local G = KEYS[1]
local i, refused, touched = 2, {}, {}
for _ = 1, tonumber(ARGV[1]) do
  local p, lo, hi_inc, hi_batch, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  i = i + 5
  local g = -1
  if p ~= "" then g = tonumber(redis.call("HGET", G, p) or "-1") end
  if p == "" or g < lo then
    for o = i, i + 3 * (n - 1), 3 do
      local k = tonumber(ARGV[o])
      redis.call("ZINCRBY", KEYS[k], ARGV[o + 2], ARGV[o + 1])
      touched[k] = true
    end
    if p ~= "" then redis.call("HSET", G, p, hi_batch) end
  elseif g >= hi_inc then
    if g < hi_batch then redis.call("HSET", G, p, hi_batch) end
  else
    refused[#refused + 1] = p
    refused[#refused + 1] = tostring(g)
  end
  i = i + 3 * n
end
local cap, ttl = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
for k, _ in pairs(touched) do
  local mode = ARGV[i + k]
  if mode == "t" then
    if redis.call("ZCARD", KEYS[k]) > 2 * cap then
      redis.call("ZREMRANGEBYRANK", KEYS[k], 0, -cap - 1)
      redis.call("HINCRBY", G, "trimmed", 1)       -- counted: which members a trim keeps depends on batch bounds
    end
  elseif mode == "e" then
    redis.call("PEXPIRE", KEYS[k], ttl, "NX")
  end
end
return refused
