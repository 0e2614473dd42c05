#pragma once
// The C++ side of the dclcomms error family. Every error carries a kind (which
// Python exception class it becomes, see python/dclcomms/errors.py) and a
// stable machine-readable code (the same string that appears in WebSocket
// close reasons, HTTP error bodies and metrics).

#include <stdexcept>
#include <string>
#include <utility>

namespace dclcomms {

enum class ErrorKind {
  Decode,       // bytes that are not a valid message of the requested type
  Encode,       // a message value that cannot be encoded
  UnknownType,  // a message type name the codec does not know
  Auth,         // auth chain / signature verification
  Token,        // JWT encode/decode
  Config,       // invalid parameters or configuration
  PubSub,       // the NATS connection cannot be made or is closed
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string code, const std::string& message)
      : std::runtime_error(message), kind_(kind), code_(std::move(code)) {}

  ErrorKind kind() const noexcept { return kind_; }
  const std::string& code() const noexcept { return code_; }

 private:
  ErrorKind kind_;
  std::string code_;
};

}  // namespace dclcomms
