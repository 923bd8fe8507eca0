# Ferryman's Rack loader: runs inside an app process, under the app's own ruby.
#
# It loads the app's config.ru with Rack::Builder (through bundler/setup when the app has
# a Gemfile), reports its journey and ready (or the error) on the handshake fd, then
# serves requests from the core over the session protocol (docs/session-protocol.md)
# with --thread-count threads. stdin is the owner pipe: at EOF (or SIGTERM) the loader
# stops accepting, lets requests in flight finish, and exits; if Ferryman itself is
# gone it exits at once. Ruby >= 3.0, and only the rack gem the app already has.
#
# rack.hijack (full and partial) is supported for the WebSocket tunnel of the session
# protocol: the app gets one end of a socket pair, and two pumps carry the bytes between
# it and the core's connection (see Tunnel).

require "json"
require "socket"
require "stringio"
require "tempfile"
require "uri" # Rack::Lint (and many apps) take it as loaded, as other servers load it

module FerrymanRack
  # The handshake's version (keep in step with ferryman/spawning/kinds.py).
  HANDSHAKE_VERSION = 1
  PROTOCOL = "session"
  REQUEST_HEAD_SIZE = 12 # u32 environ length, u64 body length (big-endian)
  MAX_FRAME = 1 << 20
  # Bodies larger than this go to a temp file (rack.input), not memory.
  MEMORY_BODY = 1 << 20
  HOP_BY_HOP = %w[connection keep-alive proxy-authenticate proxy-authorization te
                  trailer trailers transfer-encoding upgrade].freeze
  REASONS = {
    200 => "OK", 201 => "Created", 202 => "Accepted", 204 => "No Content",
    206 => "Partial Content", 301 => "Moved Permanently", 302 => "Found",
    303 => "See Other", 304 => "Not Modified", 307 => "Temporary Redirect",
    308 => "Permanent Redirect", 400 => "Bad Request", 401 => "Unauthorized",
    403 => "Forbidden", 404 => "Not Found", 405 => "Method Not Allowed",
    409 => "Conflict", 413 => "Content Too Large", 422 => "Unprocessable Content",
    429 => "Too Many Requests", 500 => "Internal Server Error", 502 => "Bad Gateway",
    503 => "Service Unavailable"
  }.freeze
  ERROR_500 = "500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n" \
              "Content-Length: 22\r\n"
  ERROR_500_BODY = "Internal Server Error\n"

  # Journey steps and the final ready/error message, as JSON lines to the core.
  class Handshake
    def initialize(fd)
      @io = fd ? IO.for_fd(fd, "w", autoclose: true) : nil
      @io&.sync = true
    end

    def send(message)
      @io&.write(JSON.generate(message) + "\n")
    end

    def step(name, state)
      send({ step: name, state: state, at: Time.now.to_f })
    end

    def close
      @io&.close
      @io = nil
    end
  end

  # The reason phrase: rack's table (every code it knows), else ours.
  def self.reason(status)
    codes = defined?(Rack::Utils::HTTP_STATUS_CODES) ? Rack::Utils::HTTP_STATUS_CODES : REASONS
    codes.fetch(status) { REASONS.fetch(status, "Unknown") }
  end

  def self.frame(kind, payload)
    [kind, payload.bytesize].pack("aN") + payload
  end

  def self.body_frames(data)
    return [] if data.empty?
    return [frame("B", data)] if data.bytesize <= MAX_FRAME

    out = []
    offset = 0
    while offset < data.bytesize
      piece = data.byteslice(offset, MAX_FRAME)
      out << frame("B", piece)
      offset += piece.bytesize
    end
    out
  end

  END_FRAME = frame("E", "")

  # The app's backtrace, without the loader's own frames.
  def self.app_backtrace(error)
    (error.backtrace || []).reject { |line| line.start_with?(__FILE__) }
  end

  # ---------------------------------------------------------------------------------------

  class Server
    attr_reader :stopping

    def initialize(app, listener, threads)
      @app = app
      @listener = listener
      @threads = threads
      @stopping = false
      @busy = Array.new(threads, false)
      @workers = []
      # Connections with a request to read, for free workers; nil tells one to stop.
      @ready = Queue.new
      # Kept-alive connections parked by the workers, for the reactor to watch.
      @parked = Queue.new
      @wake_r, @wake_w = IO.pipe
      # One byte per connection that waits for a worker while none is free: a worker
      # that holds an idle kept-alive connection takes the byte, parks its connection
      # with the reactor and comes for the waiting one.
      @claim_r, @claim_w = IO.pipe
      # Hijacked connections open now (WebSockets): the server's stop ends them.
      @tunnels = []
      @tunnels_lock = Mutex.new
    end

    def start
      @threads.times do |index|
        @workers << Thread.new { worker(index) }
      end
      @reactor = Thread.new { reactor }
    end

    # A worker keeps serving the connection it has while requests come on it (no hop
    # between threads on the hot path), but is never stuck on an idle one: the core
    # keeps up to --thread-count connections alive and opens a fresh one for a
    # WebSocket, which must find a worker. The reactor accepts new connections and
    # watches parked ones, and hands each that has a request to a worker.
    def reactor
      idle = []
      until @stopping
        readable, = IO.select([@listener, @wake_r, *idle])
        readable.each do |io|
          if io.equal?(@listener)
            conn = @listener.accept_nonblock(exception: false)
            dispatch(conn) unless conn == :wait_readable
          elsif io.equal?(@wake_r)
            @wake_r.read_nonblock(4096, exception: false)
            idle << @parked.pop until @parked.empty?
          else
            # The next request (the core never pipelines: no byte of it is buffered in
            # Ruby yet), or EOF; the worker tells them apart.
            idle.delete(io)
            dispatch(io)
          end
        end
      end
    rescue IOError, SystemCallError
      nil # the listener closed: stopping
    ensure
      idle&.each { |conn| conn.close unless conn.closed? }
    end

    def dispatch(conn)
      @claim_w.write_nonblock(".", exception: false) if @ready.num_waiting.zero?
      @ready << conn
    end

    def worker(index)
      conn = nil
      loop do
        conn ||= @ready.pop
        break if conn.nil? # stopping

        keep = false
        begin
          keep = serve_request(conn, index)
        rescue IOError, SystemCallError
          nil # the core closed the connection mid-request; it knows
        rescue Exception => e # rubocop:disable Lint/RescueException
          warn("Ferryman loader: #{e.class}: #{e.message}")
        end
        if keep
          following = next_request_here(conn)
          next if following == :here

          conn = nil if following == :parked # the reactor has it now
        end
        conn.close unless conn.nil? || conn.closed?
        conn = nil
      end
    end

    # Waits for the next request on a kept-alive connection: :here when it came (or
    # the core closed it: the next read tells); :parked when the connection went to the
    # reactor because another one needs this worker; :stopping (the caller closes it).
    def next_request_here(conn)
      until @stopping
        readable, = IO.select([conn, @claim_r])
        return :here if readable.include?(conn)
        next if @claim_r.read_nonblock(1, exception: false) == :wait_readable # another took it

        @parked << conn
        @wake_w.write_nonblock(".", exception: false)
        return :parked
      end
      :stopping
    end

    # One request from the connection; true when the connection can carry the next.
    def serve_request(conn, index)
      head = read_exactly(conn, REQUEST_HEAD_SIZE)
      return false if head.nil?

      environ_length, body_length = head.unpack("NQ>")
      block = read_exactly(conn, environ_length)
      return false if block.nil?

      @busy[index] = true
      begin
        input = read_body(conn, body_length)
        return false if input.nil?

        # A hijacked connection was the app's: it is never used for another request.
        handle(conn, block, input)
      ensure
        @busy[index] = false
      end
    end

    def read_exactly(conn, size)
      return +"" if size.zero?

      data = conn.read(size)
      return nil if data.nil? || data.bytesize < size

      data
    end

    # rack.input: rewindable, as Rack 2 requires (a temp file for a large body).
    def read_body(conn, length)
      if length <= MEMORY_BODY
        data = read_exactly(conn, length)
        return nil if data.nil?

        return StringIO.new(data.force_encoding(Encoding::ASCII_8BIT))
      end
      file = Tempfile.new("ferryman-body")
      file.unlink # gone from the directory at once: only this process holds it
      file.binmode
      left = length
      while left.positive?
        chunk = conn.read([left, 1 << 16].min)
        if chunk.nil? || chunk.empty?
          file.close
          return nil
        end
        file.write(chunk)
        left -= chunk.bytesize
      end
      file.rewind
      file
    end

    def environ(block, input, tunnel)
      pairs = block.force_encoding(Encoding::ASCII_8BIT).split("\0", -1)
      env = {}
      pairs.each_slice(2) { |key, value| env[key] = value || "" }
      scheme = env.delete("ferryman.url_scheme") || "http"
      uri = env["REQUEST_URI"] || "/"
      # Rack apps expect PATH_INFO as sent (still percent-encoded), as Puma gives it.
      path = uri.split("?", 2)[0]
      script_name = env["SCRIPT_NAME"] || ""
      unless script_name.empty?
        # Mounted at a prefix: it goes to SCRIPT_NAME, and PATH_INFO is the raw rest. The
        # core routed the request here because the path's first segments, decoded one
        # at a time, are the prefix's (an encoded "/" is never a boundary): so the rest
        # is what follows that many raw segments, still encoded as sent.
        count = script_name.count("/")
        parts = path.split("/", count + 2)
        path = parts.length > count + 1 ? "/" + parts[count + 1] : ""
      end
      env["PATH_INFO"] = path
      env["SCRIPT_NAME"] = script_name
      env["QUERY_STRING"] ||= ""
      env["SERVER_SOFTWARE"] = "Ferryman"
      env["rack.version"] = Rack.const_defined?(:VERSION) ? Rack::VERSION : [1, 3]
      env["rack.url_scheme"] = scheme
      env["rack.input"] = input
      env["rack.errors"] = $stderr
      env["rack.multithread"] = @threads > 1
      env["rack.multiprocess"] = true
      env["rack.run_once"] = false
      # Full hijack: the app gets the connection, raw bytes both ways (what WebSocket
      # libraries such as faye-websocket use); it writes the response head itself.
      env["rack.hijack?"] = true
      env["rack.hijack"] = -> { env["rack.hijack_io"] = tunnel.open(self, full: true) }
      # Rack 3: callables run once the response is done (or failed), as Puma runs them.
      env["rack.response_finished"] = []
      env
    end

    # Serves one request; false when the app hijacked the connection (not reusable).
    def handle(conn, block, input)
      tunnel = Tunnel.new(conn)
      env = environ(block, input, tunnel)
      head_only = env["REQUEST_METHOD"] == "HEAD"
      head_sent = false
      status = headers = body = error = nil
      begin
        status, headers, body = @app.call(env)
        if tunnel.open?
          # Full hijack: the response the app returned is not used (Rack SPEC); the
          # connection is the app's until the tunnel ends.
          head_sent = true
          tunnel.finish(self)
          return false
        end
        hijack = headers["rack.hijack"] if headers.respond_to?(:[])
        head_sent = send_response(conn, status.to_i, headers, body, head_only, input, hijack)
        if hijack
          # Partial hijack: the head went out; the app writes the body (or a
          # WebSocket's frames) to the IO it gets, and closes it when done.
          hijack.call(tunnel.open(self, full: false, status: status.to_i))
          tunnel.finish(self)
          return false
        end
        true
      rescue IOError, SystemCallError
        tunnel.finish(self, failed: true) if tunnel.open?
        raise
      rescue Exception => e # rubocop:disable Lint/RescueException
        error = e
        warn("Error while serving a request:\n#{e.class}: #{e.message}\n" \
             "#{FerrymanRack.app_backtrace(e).map { |l| "  #{l}" }.join("\n")}")
        $stderr.flush
        if tunnel.open?
          tunnel.finish(self, failed: true)
          return false
        end
        if head_sent
          conn.write(FerrymanRack.frame("A", "the app raised mid-response"))
        else
          out = [FerrymanRack.frame("H", ERROR_500)]
          out.concat(FerrymanRack.body_frames(ERROR_500_BODY)) unless head_only
          out << END_FRAME
          conn.write(out.join)
        end
        true
      ensure
        body.close if body.respond_to?(:close)
        input.close if input.respond_to?(:close)
        response_finished(env, status, headers, error)
      end
    end

    def response_finished(env, status, headers, error)
      callbacks = env && env["rack.response_finished"]
      return unless callbacks.is_a?(Array)

      # Rack 3.1's order: the last registered runs first.
      callbacks.reverse_each do |callback|
        callback.call(env, status, headers, error)
      rescue Exception => e # rubocop:disable Lint/RescueException
        warn("Error in a rack.response_finished callback: #{e.class}: #{e.message}")
      end
    end

    def track(tunnel, open)
      @tunnels_lock.synchronize { open ? @tunnels << tunnel : @tunnels.delete(tunnel) }
    end

    # The server is going away: hijacked WebSockets get a close frame (1001).
    def going_away
      @tunnels_lock.synchronize { @tunnels.dup }.each(&:going_away)
    end

    # Sends the head and the body; true once the head went out.
    def send_response(conn, status, headers, body, head_only, input, hijack)
      lines = +"#{status} #{FerrymanRack.reason(status)}\r\n"
      seen_length = false
      headers.each do |name, value|
        name = name.to_s
        lower = name.downcase
        next if HOP_BY_HOP.include?(lower) || lower.start_with?("rack.")

        seen_length = true if lower == "content-length"
        values = value.is_a?(Array) ? value : value.to_s.split("\n")
        values.each do |one|
          raise ArgumentError, "header #{name} has a line break" if one.to_s.match?(/[\r\n]/)

          lines << "#{name}: #{one}\r\n"
        end
      end
      if hijack
        # The app writes the body itself (for a HEAD, the core drops it).
        conn.write(FerrymanRack.frame("H", lines.b))
        return true
      end
      # The whole body is known: one write, with its length. Only an Array counts: Rails'
      # streaming bodies (ActionController::Live) respond to to_ary with nil, and are
      # enumerated below as Puma does.
      parts = body.respond_to?(:to_ary) ? body.to_ary : nil
      if parts.is_a?(Array)
        data = parts.join.b
        if !seen_length && status >= 200 && ![204, 304].include?(status)
          lines << "Content-Length: #{data.bytesize}\r\n"
        end
        out = [FerrymanRack.frame("H", lines.b)]
        out.concat(FerrymanRack.body_frames(data)) unless head_only
        out << END_FRAME
        conn.write(out.join)
        return true
      end
      conn.write(FerrymanRack.frame("H", lines.b))
      if head_only
        conn.write(END_FRAME)
        return true
      end
      # Rack 3: a body that responds to each is enumerable, even if it responds to
      # call too; only one without each is a streaming body.
      if body.respond_to?(:each)
        body.each do |chunk|
          chunk = chunk.to_s.b
          FerrymanRack.body_frames(chunk).each { |f| conn.write(f) } unless chunk.empty?
        end
      elsif body.respond_to?(:call)
        body.call(Stream.new(conn, input)) # Rack 3 streaming body
      end
      conn.write(END_FRAME)
      true
    end

    def stop(core_alive)
      @stopping = true
      begin
        @listener.shutdown(Socket::SHUT_RDWR)
      rescue StandardError
        nil
      end
      @listener.close unless @listener.closed?
      @wake_w.write_nonblock(".", exception: false) # the reactor sees @stopping
      @claim_w.write_nonblock("." * @threads, exception: false) # and the idle workers
      @threads.times { @ready << nil }
      # Hijacked connections have no end of their own: they end with the server.
      @tunnels_lock.synchronize { @tunnels.dup }.each(&:close)
      sleep(0.02) while @busy.any? && core_alive.call
    end
  end

  # A hijacked connection (rack.hijack, full or partial). The app gets one end of a
  # socket pair (a real IO, as WebSocket libraries expect); two pumps carry the bytes:
  # the client's raw bytes from the core's connection to the app, and what the app
  # writes to the core in B frames (after a full hijack, the head it writes first
  # becomes the H frame). Either side closing ends the tunnel, as the protocol says.
  class Tunnel
    MAX_HEAD = 64 * 1024
    # A WebSocket close frame with code 1001 (going away), unmasked: from a server.
    GOING_AWAY = [0x88, 2, 1001].pack("CCn").freeze

    # Made for every request (rack.hijack may be called): only what a hijack needs is
    # made when it is.
    def initialize(conn)
      @conn = conn
      @ours = nil
      @lock = nil
      @going_away = false
    end

    def open?
      !@ours.nil?
    end

    # The app's end of the tunnel. A partial hijack's status is known (its head went
    # out); a full hijack's is read from the head the app writes.
    def open(server, full:, status: nil)
      raise IOError, "the connection was hijacked already" if @ours

      @lock = Mutex.new
      app_io, @ours = UNIXSocket.pair
      app_io.binmode
      @ours.binmode
      @websocket = status == 101
      server.track(self, true)
      @inbound = Thread.new { inbound }
      @outbound = Thread.new { outbound(full) }
      app_io
    end

    # Waits for the tunnel's end, then lets the connection go.
    def finish(server, failed: false)
      close if failed
      @outbound.join
      @conn.close unless @conn.closed? # ends the inbound pump if the app ended first
      @inbound.join
      close
      server.track(self, false)
    end

    # Ends the tunnel: the app reads EOF, its writes fail.
    def close
      @lock&.synchronize { @ours.close unless @ours.nil? || @ours.closed? }
    end

    def going_away
      @going_away = true
      close
    end

    private

    # The client's bytes to the app, as they come.
    def inbound
      loop { @ours.write(@conn.readpartial(1 << 16)) }
    rescue IOError, SystemCallError
      nil # the client or the core ended the tunnel (EOF), or it was closed here
    ensure
      close
    end

    # The app's bytes to the core, in frames; E when the app closed its end.
    def outbound(full)
      chunked = false
      if full
        head = read_head
        return if head.nil?

        status, lines, chunked = head
        @websocket = status == 101
        write(FerrymanRack.frame("H", lines))
      end
      if chunked
        dechunk
      else
        loop do
          data = @ours.readpartial(1 << 16)
          FerrymanRack.body_frames(data).each { |f| write(f) }
        end
      end
    rescue EOFError
      write(END_FRAME)
    rescue IOError, SystemCallError
      # Closed here: by the server going away (a WebSocket gets its close frame), or
      # because the client left.
      write(FerrymanRack.frame("B", GOING_AWAY) + END_FRAME) if @going_away && @websocket
    end

    def write(data)
      @conn.write(data) unless @conn.closed?
    rescue IOError, SystemCallError
      nil # the core is gone: the inbound pump sees it too
    end

    # The head a full hijack writes ("HTTP/1.1 101 Switching Protocols\r\n..."), as
    # the H frame's payload: [status, payload, chunked?]; nil (after a 502) if the app
    # closed before a head or wrote something else.
    def read_head
      text = @ours.gets("\r\n\r\n", MAX_HEAD)
      unless text&.end_with?("\r\n\r\n")
        warn("Ferryman loader: the app hijacked the connection but wrote no HTTP head")
        write(FerrymanRack.frame("H", "502 Bad Gateway\r\nContent-Length: 0\r\n") + END_FRAME)
        return nil
      end
      status_line, *fields = text.b.split("\r\n")
      _, code, reason = status_line.split(" ", 3)
      status = code.to_i
      reason = FerrymanRack.reason(status) if reason.nil? || reason.empty?
      payload = +"#{status} #{reason}\r\n"
      chunked = false
      fields.each do |field|
        name, value = field.split(":", 2)
        lower = name.to_s.strip.downcase
        chunked = true if lower == "transfer-encoding" && value.to_s.downcase.include?("chunked")
        # The core adds Connection/Upgrade and its own framing.
        payload << "#{name.strip}: #{value.to_s.strip}\r\n" unless HOP_BY_HOP.include?(lower)
      end
      [status, payload.b, chunked]
    end

    # A chunked body the app encoded itself (a full hijack answering with
    # Transfer-Encoding: chunked): the core frames the body, so it goes on decoded.
    def dechunk
      loop do
        line = @ours.gets("\r\n", 1024) or raise EOFError
        size = line.to_i(16) # stops at a chunk extension's ";"
        if size.zero?
          # Trailers (not passed on), up to the empty line.
          64.times { break if @ours.gets("\r\n", MAX_HEAD).to_s.strip.empty? }
          raise EOFError
        end
        data = @ours.read(size)
        raise EOFError if data.nil? || data.bytesize < size

        @ours.read(2)
        FerrymanRack.body_frames(data).each { |f| write(f) }
      end
    end
  end

  # What a Rack 3 streaming body writes to (and reads the request body from).
  class Stream
    def initialize(conn, input)
      @conn = conn
      @input = input
      @closed = false
    end

    def read(length = nil, buffer = nil)
      @input ? @input.read(length, buffer) : nil
    end

    def write(data)
      data = data.to_s.b
      FerrymanRack.body_frames(data).each { |f| @conn.write(f) } unless data.empty?
      data.bytesize
    end

    def <<(data)
      write(data)
      self
    end

    def flush
      self
    end

    def close_read; end

    def close_write
      @closed = true
    end

    def close
      @closed = true
    end

    def closed?
      @closed
    end
  end

  # ---------------------------------------------------------------------------------------

  def self.load_app(handshake, app_root, startup_file)
    handshake.step("load_app", "in_progress")
    path = File.expand_path(startup_file, app_root)
    unless File.file?(path)
      fail_load(handshake, "startup_file_missing", "startup file #{path} does not exist", nil)
    end
    begin
      require "bundler/setup" if File.file?(File.join(app_root, "Gemfile"))
      require "rack"
      built = Rack::Builder.parse_file(path)
      app = built.is_a?(Array) ? built[0] : built # Rack 2: [app, options]
      unless app.respond_to?(:call)
        fail_load(handshake, "app_not_callable", "#{startup_file} did not build a Rack app", nil)
      end
    rescue SyntaxError => e
      fail_load(handshake, "syntax_error", "#{e.class}: #{e.message}", e)
    rescue Exception => e # rubocop:disable Lint/RescueException
      fail_load(handshake, "import_error", "#{e.class}: #{e.message}", e)
    end
    handshake.step("load_app", "performed")
    app
  end

  def self.fail_load(handshake, kind, message, error)
    trace = error ? ([message] + app_backtrace(error).map { |l| "  #{l}" }).join("\n") : ""
    $stderr.write("#{trace}\n") unless trace.empty?
    $stderr.flush
    handshake.send({ error: { step: "load_app", kind: kind, message: message,
                              traceback: trace } })
    handshake.close
    exit!(1)
  end

  def self.main
    args = JSON.parse(ARGV[0])
    # App output reaches the log as it is written, as under Passenger and Puma (an app's
    # logger on $stdout, Rails' among them, was held in Ruby's buffer until exit).
    $stdout.sync = true
    $stderr.sync = true
    parent = Process.ppid
    handshake = Handshake.new(args["handshake_fd"])
    handshake.send({ step: "loader_start", state: "performed", at: Time.now.to_f,
                     interpreter: "Ruby #{RUBY_VERSION} (#{RbConfig.ruby})" })
    app_root = args["app_root"]
    Dir.chdir(app_root)
    $LOAD_PATH.unshift(app_root)
    Process.setproctitle("Ferryman Rack: #{app_root}")
    app = load_app(handshake, app_root, args["startup_file"])

    handshake.step("listen", "in_progress")
    listener = UNIXServer.new(args["socket"])
    handshake.step("listen", "performed")
    threads = args["threads"].to_i
    threads = 1 if threads < 1
    server = Server.new(app, listener, threads)
    server.start
    # The traps before "ready": a SIGTERM sent as soon as the core hears it (systemd's
    # control-group kill right after a spawn) is an orderly stop, not signal 15.
    # An app that installed a TERM handler of its own (config.ru, an initializer) keeps
    # it, as under the Python and Node.js loaders: the app's own stop wins.
    stop = Queue.new
    previous = Signal.trap("TERM") do
      if server.stopping
        Signal.trap("TERM", "DEFAULT")
        Process.kill("TERM", Process.pid)
      else
        $stderr.write("Ferryman loader: received SIGTERM; finishing the requests in flight\n")
        stop << :term
      end
    end
    Signal.trap("TERM", previous) if previous.respond_to?(:call) || previous == "EXIT"
    # Before killing a hung process (--max-request-time) the core sends SIGQUIT: every
    # thread's backtrace goes to the log.
    Signal.trap("QUIT") do
      Thread.new do
        lines = ["Ferryman loader: asked what this process is doing (max_request_time):"]
        Thread.list.each do |thread|
          lines << "Thread #{thread.object_id} (#{thread.status}):"
          (thread.backtrace || []).each { |line| lines << "  #{line}" }
        end
        $stderr.write(lines.join("\n") + "\n")
        $stderr.flush
      end
    end
    handshake.step("ready", "performed")
    handshake.send({ ready: { version: HANDSHAKE_VERSION, socket: args["socket"],
                              protocol: PROTOCOL, concurrency: threads, pid: Process.pid } })
    handshake.close

    Thread.new do
      begin
        loop do
          # "g": the server is going away (hijacked WebSockets get 1001); bytes we do
          # not know are ignored.
          server.going_away if $stdin.readpartial(4096).include?("g")
        end
      rescue EOFError, IOError, SystemCallError
        stop << :eof
      end
    end
    stop.pop
    server.stop(-> { Process.ppid == parent })
    $stdout.flush
    $stderr.flush
    exit!(0)
  end
end

FerrymanRack.main if $PROGRAM_NAME == __FILE__
