-- Appends a relay batch to a stream, fenced by the relay's term, atomically.
-- KEYS[1]: the stream; KEYS[2]: its fence (the latest relay term that published).
-- ARGV[1]: the relay's term; ARGV[2]: MAXLEN (0: none); ARGV[3]: arguments per entry (19);
-- then, per entry, its ID and its nine field/value pairs.
-- A term below the fence is refused as a whole (error FENCED); otherwise the fence rises to the
-- term and each entry is appended on its own: the reply has, per entry, its ID or '!' and the
-- error Redis gave (an ID at or below the top is refused, and the caller looks at what is there).
local term = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if fence > term then
  return redis.error_reply('FENCED relay term ' .. ARGV[1] .. ' has ended: the stream is fenced at term ' .. fence)
end
if fence < term then
  redis.call('SET', KEYS[2], ARGV[1])
end
if tonumber(ARGV[3]) ~= 19 then
  return redis.error_reply('ERR fenced_append expects 19 arguments per entry')
end
local stream, maxlen, a = KEYS[1], ARGV[2], ARGV
local trim = tonumber(maxlen) > 0
local replies = {}
for i = 4, #a - 18, 19 do
  local reply
  if trim then
    reply = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, a[i],
      a[i+1], a[i+2], a[i+3], a[i+4], a[i+5], a[i+6], a[i+7], a[i+8], a[i+9],
      a[i+10], a[i+11], a[i+12], a[i+13], a[i+14], a[i+15], a[i+16], a[i+17], a[i+18])
  else
    reply = redis.pcall('XADD', stream, a[i],
      a[i+1], a[i+2], a[i+3], a[i+4], a[i+5], a[i+6], a[i+7], a[i+8], a[i+9],
      a[i+10], a[i+11], a[i+12], a[i+13], a[i+14], a[i+15], a[i+16], a[i+17], a[i+18])
  end
  if type(reply) == 'table' and reply.err then
    replies[#replies + 1] = '!' .. reply.err
  else
    replies[#replies + 1] = reply
  end
end
return replies
