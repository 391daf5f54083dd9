"""The dashboard's forms: each a Flask-WTF form, so each POST carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, ValidationError

from ..api_keys import NAME_CONTROL_MESSAGE
from ..control_chars import has_control


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class ConfirmForm(FlaskForm):
    """An admin action, posted from its confirmation page."""


class LogoutForm(FlaskForm):
    pass


def _no_control_characters(form: FlaskForm, field: StringField) -> None:
    if field.data and has_control(field.data):
        raise ValidationError(NAME_CONTROL_MESSAGE)


class NewApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(min=1, max=128), _no_control_characters])
