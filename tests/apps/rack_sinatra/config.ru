# A Sinatra app (Debian's ruby-sinatra), the modular style.
require "sinatra/base"

class App < Sinatra::Base
  get "/" do
    "Hello from Sinatra #{Process.pid}"
  end

  get "/hello/:name" do
    content_type :json
    %({"hello": "#{params[:name]}", "q": "#{params[:q]}"})
  end

  post "/upload" do
    file = params[:file]
    data = file[:tempfile].read
    "#{file[:filename]} #{data.bytesize}"
  end

  get "/stream" do
    stream do |out|
      3.times { |i| out << "part #{i}\n" }
    end
  end
end

run App
