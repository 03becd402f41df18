-- Shared by featurestream's Redis scripts (sinks/online/lua.py puts it before each of them).
-- Lua numbers are doubles: a 19-digit nanosecond time or a Kafka offset past 2^53 does not fit
-- exactly, so integers are compared as canonical decimal strings (sign, then length, then digits).
local function cmp_dec(a, b)
  local neg_a = string.sub(a, 1, 1) == "-"
  local neg_b = string.sub(b, 1, 1) == "-"
  if neg_a ~= neg_b then
    if neg_a then return -1 end
    return 1
  end
  local r = 0
  if #a ~= #b then
    if #a < #b then r = -1 else r = 1 end
  elseif a ~= b then
    if a < b then r = -1 else r = 1 end
  end
  if neg_a then r = -r end
  return r
end
