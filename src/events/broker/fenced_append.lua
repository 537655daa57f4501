-- Appends a relay batch to a stream, fenced by the relay's term, atomically.
-- KEYS[1]: the stream; KEYS[2]: its fence (the latest relay term that published).
-- ARGV[1]: the relay's term; ARGV[2]: MAXLEN (0: none); ARGV[3]: arguments per entry;
-- then, per entry, its ID and its field/value pairs.
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
local maxlen = tonumber(ARGV[2])
local width = tonumber(ARGV[3])
local replies = {}
local i = 4
while i + width - 1 <= #ARGV do
  local command = {'XADD', KEYS[1]}
  if maxlen > 0 then
    command[3] = 'MAXLEN'
    command[4] = '~'
    command[5] = ARGV[2]
  end
  for j = i, i + width - 1 do
    command[#command + 1] = ARGV[j]
  end
  local reply = redis.pcall(unpack(command))
  if type(reply) == 'table' and reply.err then
    replies[#replies + 1] = '!' .. reply.err
  else
    replies[#replies + 1] = reply
  end
  i = i + width
end
return replies
