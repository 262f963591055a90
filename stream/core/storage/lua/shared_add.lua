-- Add a batch's increments to the shared statistics of one shard, once per input offset.
-- Every key of a call shares the shard's hash tag {s:NN} (one Redis Cluster slot); KEYS[1] is the shard's
-- guard, a hash: input partition -> the newest offset whose increments this shard holds. An increment is
-- added only if its event's offset is newer than the guard's, so a batch redelivered after a crash (or
-- written twice by a worker that lost its partition) adds nothing twice.
-- KEYS: guard (also counts the trims of its shard: field "trimmed"), data keys (sorted sets)
-- ARGV: sections as JSON: [[partition ("" = none: no guard, as in a backtest), lo (the oldest offset among
--       its increments), hi_inc (the newest among them), hi_batch (the newest offset of the batch in that
--       partition), [[data key index into KEYS, member, amount], ...]], ...],
--       cap (a sorted set in mode "t" is cut back to its `cap` best when it holds more than 2 x cap),
--       ttl_ms (mode "e": expire ttl_ms after the first write), modes (a character per data key: t, e or -)
-- Returns: {partition, guard, ...} for the sections refused because the guard lies inside their range:
--          the caller drops the increments at or below that guard and calls again.
local G = KEYS[1]
local sections = cjson.decode(ARGV[1])
local cap, ttl, modes = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local refused, touched = {}, {}
for _, sec in ipairs(sections) do
  local p, lo, hi_inc, hi_batch, ops = sec[1], sec[2], sec[3], sec[4], sec[5]
  local g = -1
  if p ~= "" then g = tonumber(redis.call("HGET", G, p) or "-1") end
  if p == "" or g < lo then
    for _, op in ipairs(ops) do
      redis.call("ZINCRBY", KEYS[op[1]], op[3], op[2])
      touched[op[1]] = true
    end
    if p ~= "" then redis.call("HSET", G, p, string.format("%d", hi_batch)) end
  elseif g >= hi_inc then
    if g < hi_batch then redis.call("HSET", G, p, string.format("%d", hi_batch)) end
  else
    refused[#refused + 1] = p
    refused[#refused + 1] = string.format("%d", g)
  end
end
for k, _ in pairs(touched) do
  local mode = string.sub(modes, k - 1, k - 1)
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
