"""A FastAPI app whose lifespan startup raises: a failed start, explained."""

from contextlib import asynccontextmanager

from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app: FastAPI):
    raise RuntimeError("the cache server is on fire")
    yield


app = FastAPI(lifespan=lifespan)
